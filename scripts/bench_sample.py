"""The diffusers side of `cargo xtask bench sample`.

  --make-model DIR --layout NAME   write a random-weight DDPMPipeline folder
                                   (model_index.json, unet/, scheduler/)
  --model DIR --steps 20 --num-images N --threads T
                                   time diffusers' DPMSolverMultistepScheduler
                                   (defaults, from the folder's scheduler config)
                                   over UNet2DModel, as DDPMPipeline's loop does,
                                   from model load to the final sample; prints
                                   one JSON line

Run through `cargo xtask py scripts/bench_sample.py ...`.
"""

import argparse
import json
import time

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel

LAYOUTS = {
    # the trainer's default preset (1.1 M parameters, 28x28 grey, 10 classes)
    "default": dict(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), attention_head_dim=32,
        norm_num_groups=8,
    ),
    # google/ddpm-cifar10-32's layout (35.7 M parameters)
    "cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
        layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
        flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, norm_eps=1e-6,
    ),
}


def make_model(path, layout):
    from diffusers import DDPMPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(**LAYOUTS[layout])
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2")).save_pretrained(path)


def bench(model, steps, n, threads):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    unet = UNet2DModel.from_pretrained(model, subfolder="unet").eval()
    scheduler = DPMSolverMultistepScheduler.from_pretrained(model, subfolder="scheduler")
    scheduler.set_timesteps(steps)
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(0)) * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = unet(scheduler.scale_model_input(x, t), t).sample
            x = scheduler.step(out, t, x).prev_sample
    seconds = time.perf_counter() - start
    print(json.dumps({"images": n, "seconds": seconds, "img_per_s": n / seconds, "threads": threads}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--make-model")
    p.add_argument("--layout", default="default", choices=sorted(LAYOUTS))
    p.add_argument("--model")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--num-images", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    if a.make_model:
        make_model(a.make_model, a.layout)
    else:
        bench(a.model, a.steps, a.num_images, a.threads)


if __name__ == "__main__":
    main()
