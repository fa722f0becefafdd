"""Checks that a latent-mode run folder of crates/trainer loads in diffusers'
StableDiffusionPipeline and makes our images from the same latents.

    LMZH_LATENT_CHECK_DIR=DIR cargo test -p trainer --test latent a_latent_run_exports
    cargo xtask py scripts/check_latent_run.py DIR

DIR holds `run/` (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
scheduler/ as the trainer wrote them) and io.safetensors (the initial latents
and our images, [0, 1], of the two prompts below with DDIM, 4 steps, guidance
2 against the empty prompt). The relative L2 error of diffusers' images
against ours must be <= 1e-3.
"""

import os
import sys

import torch
from safetensors.torch import load_file

from diffusers import DDIMScheduler, StableDiffusionPipeline

PROMPTS = ["a dark square", "a bright square"]
TOLERANCE = 1e-3


def main(root):
    io = load_file(os.path.join(root, "io.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(root, "run"), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    h, w = io["images"].shape[-2:]
    with torch.no_grad():
        images = pipe(
            prompt=PROMPTS,
            num_inference_steps=4,
            guidance_scale=2.0,
            latents=io["latents"].clone(),
            height=h,
            width=w,
            output_type="pt",
        ).images
    err = ((images - io["images"]).norm() / io["images"].norm()).item()
    print(f"{type(pipe).__name__} with {type(pipe.vae).__name__}: images {tuple(images.shape)}, "
          f"relative L2 error {err:.2e}")
    return 0 if err <= TOLERANCE else 1


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1]))
