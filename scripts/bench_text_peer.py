"""The diffusers side of `cargo xtask bench text`: the peer of `lmzh bench
text`. Stable Diffusion 1.5's UNet2DConditionModel with random weights (its
published config: diffusers' defaults with cross_attention_dim 768), and the
denoising loop of StableDiffusionPipeline: --steps DDIMScheduler steps (SD
settings) with classifier-free guidance 7.5, the batch doubled (negative
prompt first), on 77-token prompt embeddings. Same flags and the same JSON
line as `lmzh bench text`. Run through `cargo xtask py`.
"""

import argparse
import json
import resource
import time

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel

LAYOUTS = {
    "sd15": dict(cross_attention_dim=768, sample_size=64),
    "sd-tiny": dict(
        cross_attention_dim=16, sample_size=64, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2, norm_num_groups=8,
    ),
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["text"])
    p.add_argument("--layout", default="sd15", choices=sorted(LAYOUTS))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    start = time.perf_counter()
    unet = UNet2DConditionModel(**LAYOUTS[a.layout]).to(device).eval()
    build_seconds = time.perf_counter() - start
    width = unet.config.cross_attention_dim
    s = a.size // 8
    latents0 = torch.randn(a.batch, 4, s, s, device=device)
    prompt = torch.randn(a.batch, 77, width, device=device)
    negative = torch.randn(1, 77, width, device=device)
    embeds = torch.cat([negative.expand(a.batch, -1, -1), prompt])
    dtype = DTYPES[a.precision]

    def run(steps):
        scheduler = DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
            clip_sample=False, set_alpha_to_one=False,
        )
        scheduler.set_timesteps(steps)
        latents = latents0 * scheduler.init_noise_sigma
        with torch.no_grad():
            for t in scheduler.timesteps:
                model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    pred = unet(model_input, t, encoder_hidden_states=embeds).sample
                uncond, cond = pred.float().chunk(2)
                pred = uncond + 7.5 * (cond - uncond)
                latents = scheduler.step(pred, t, latents).prev_sample
        latents.cpu()

    if a.warmup:
        run(1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run(a.steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "mode": "text", "layout": a.layout, "size": a.size, "batch": a.batch, "steps": a.steps,
        "guidance_scale": 7.5, "precision": a.precision, "device": str(device),
        "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in unet.parameters()),
        "build_seconds": build_seconds, "seconds": seconds, "seconds_per_image": seconds / a.batch,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
