"""The diffusers side of `cargo xtask bench`: the peer of `lmzh bench`.

  train   AdamW steps of UNet2DModel on random images: epsilon-prediction MSE
          at random timesteps (DDPMScheduler.add_noise), backward, gradient
          clipping at 1.0, optimizer.step, EMAModel.step, and one host read of
          the loss, as diffusers' train_unconditional.py example does per step
  sample  one DPMSolverMultistepScheduler run of --steps model evaluations,
          as DDPMPipeline's loop does
  matmul  torch.mm GFLOP/s on this device

Same flags and the same JSON line as `lmzh bench`; --compile wraps the model
in torch.compile (a second peer row on GPUs). Run through `cargo xtask py`.
"""

import argparse
import json
import resource
import time

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

LAYOUTS = {
    # 32x32 grey, 6.8 M parameters: attention at 16x16 and 8x8, 8-channel heads
    "grey32": dict(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(64, 128, 128),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
        norm_num_groups=32,
    ),
    # google/ddpm-cifar10-32's layout (35.7 M parameters)
    "ddpm-cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
        flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, norm_eps=1e-6,
    ),
}

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def autocast(device, precision):
    dtype = DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def build(a, device):
    torch.manual_seed(0)
    cfg = dict(LAYOUTS[a.layout])
    if a.size:
        cfg["sample_size"] = a.size
    unet = UNet2DModel(**cfg).to(device)
    if a.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    return unet, cfg


def train(a, device):
    unet, cfg = build(a, device)
    unet.train()
    model = torch.compile(unet) if a.compile else unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    s, c = cfg["sample_size"], cfg["in_channels"]
    x0 = torch.rand(a.batch, c, s, s, device=device) * 2 - 1
    if a.channels_last:
        x0 = x0.to(memory_format=torch.channels_last)

    def step():
        t = torch.randint(0, 1000, (a.batch,), device=device)
        noise = torch.randn_like(x0)
        x_t = scheduler.add_noise(x0, noise, t)
        with autocast(device, a.precision):
            pred = model(x_t, t).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(a.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync(device)
    return time.perf_counter() - start, unet, cfg


def sample(a, device):
    unet, cfg = build(a, device)
    unet.eval()
    model = torch.compile(unet) if a.compile else unet
    s, c = cfg["sample_size"], cfg["in_channels"]
    x_t = torch.randn(a.batch, c, s, s, device=device)

    def run(steps):
        scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000)
        scheduler.set_timesteps(steps)
        x = x_t * scheduler.init_noise_sigma
        with torch.no_grad():
            for t in scheduler.timesteps:
                with autocast(device, a.precision):
                    out = model(scheduler.scale_model_input(x, t), t).sample
                x = scheduler.step(out.float(), t, x).prev_sample
        x.cpu()

    if a.warmup:
        run(2)
    sync(device)
    start = time.perf_counter()
    run(a.steps)
    sync(device)
    return time.perf_counter() - start, unet, cfg


def matmul(a, device):
    dtype = DTYPES[a.precision] or torch.float32
    n = 1024 if device.type == "cpu" else 8192
    x = torch.randn(n, n, device=device, dtype=dtype)
    y = torch.randn(n, n, device=device, dtype=dtype)
    x @ y
    sync(device)
    probe = time.perf_counter()
    x @ y
    sync(device)
    reps = min(200, max(2, int(1.0 / max(time.perf_counter() - probe, 1e-6))))
    start = time.perf_counter()
    for _ in range(reps):
        x @ y
    sync(device)
    secs = time.perf_counter() - start
    return {"mode": "matmul", "precision": a.precision, "n": n, "device": str(device),
            "threads": torch.get_num_threads(), "gflop_per_s": 2 * n**3 * reps / secs / 1e9,
            "peak_rss_mb": peak_rss_mb()}


def forward_flops(unet, cfg):
    """Forward FLOPs per image, counted as `lmzh bench` counts them: convolutions,
    linear layers and the two attention matmuls, 2 per multiply-add."""
    total = 0
    hooks = []

    def conv(m, inp, out):
        nonlocal total
        k = m.weight[0].numel()  # in/groups * kh * kw
        total += 2 * k * out[0].numel()

    def linear(m, inp, out):
        nonlocal total
        total += 2 * m.in_features * out[0].numel()

    def attn(m, inp, out):
        nonlocal total
        x = inp[0]
        l = x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[1]
        inner = m.inner_dim
        total += 2 * 2 * l * l * inner

    for mod in unet.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
        elif type(mod).__name__ == "Attention":
            hooks.append(mod.register_forward_hook(attn))
    s, c = cfg["sample_size"], cfg["in_channels"]
    with torch.no_grad():
        unet(torch.zeros(1, c, s, s, device=unet.device), torch.tensor([1], device=unet.device))
    for h in hooks:
        h.remove()
    return total


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["train", "sample", "matmul"])
    p.add_argument("--layout", default="grey32", choices=sorted(LAYOUTS))
    p.add_argument("--size", type=int)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.mode == "matmul":
        print(json.dumps(matmul(a, device)))
        return
    secs, unet, cfg = (train if a.mode == "train" else sample)(a, device)
    images = a.batch * a.steps
    flops = forward_flops(unet, cfg) * (3 if a.mode == "train" else 1)
    ips = images / secs
    print(json.dumps({
        "mode": a.mode, "layout": a.layout, "size": cfg["sample_size"], "batch": a.batch,
        "precision": a.precision, "channels_last": a.channels_last, "compile": a.compile,
        "device": str(device), "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in unet.parameters()), "steps": a.steps,
        "seconds": secs, "img_per_s": ips, "gflop_per_image": flops / 1e9,
        "gflop_per_s": ips * flops / 1e9, "peak_rss_mb": peak_rss_mb(),
    }))


if __name__ == "__main__":
    main()
