"""A tiny Stable-Diffusion-1.x-like pipeline and its reference outputs, from
diffusers and transformers, for the text-to-image tests of crates/sampler
and crates/cli.

    cargo xtask py scripts/gen_sd_pipeline_fixtures.py

Builds offline, with fixed seeds: the tiny CLIP tokenizer and text encoder
of crates/text/tests/fixtures/sd1-tiny (hidden size 32), a tiny
UNet2DConditionModel (cross_attention_dim 32) and a tiny AutoencoderKL with
four levels (the 8x factor of Stable Diffusion's VAE), and PNDMScheduler
with Stable Diffusion's settings; saves them as a StableDiffusionPipeline
folder in crates/sampler/tests/fixtures/sd_tiny/pipeline/ (safety checker
and feature extractor left out, as `requires_safety_checker=False`), loads
it back with from_pretrained, and runs it from fixed latents: for PNDM, DDIM,
Euler and DPM-Solver++ (each built with from_config of the pipeline's
scheduler config, as a user swaps schedulers), two prompts with a negative
prompt at guidance 7.5, and the same without guidance; 10 steps. Writes the
inputs and the final latents and images (output_type "pt": [0, 1]) to
crates/sampler/tests/fixtures/sd_tiny/io.safetensors.
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file

from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "crates", "text", "tests", "fixtures", "sd1-tiny")
OUT = os.path.join(ROOT, "crates", "sampler", "tests", "fixtures", "sd_tiny")
PIPE = os.path.join(OUT, "pipeline")
PROMPTS = ["a red circle on a white field", "Two cats, 3 dogs!"]
NEGATIVE = "blurry"
STEPS = 10
SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
}


def perturb(model, generator, scale=0.05):
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name.split(".")[-2]:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.add_(scale * noise)


def build():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32],
        layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    ).eval()
    perturb(unet, gen)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 16, 16, 16],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    ).eval()
    perturb(vae, gen, scale=0.02)
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(TEXT, "text_encoder")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(TEXT, "tokenizer"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    shutil.rmtree(PIPE, ignore_errors=True)
    pipe.save_pretrained(PIPE, safe_serialization=True)


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    build()
    pipe = StableDiffusionPipeline.from_pretrained(PIPE, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(2)
    io = {"latents": torch.randn(len(PROMPTS), 4, 8, 8, generator=gen)}
    base = pipe.scheduler.config
    for name, cls in SCHEDULERS.items():
        pipe.scheduler = cls.from_config(base)
        for guidance in (1.0, 7.5):
            kwargs = dict(
                prompt=PROMPTS,
                num_inference_steps=STEPS,
                guidance_scale=guidance,
                latents=io["latents"].clone(),
                height=64,
                width=64,
            )
            if guidance > 1.0:
                kwargs["negative_prompt"] = [NEGATIVE] * len(PROMPTS)
            with torch.no_grad():
                latents = pipe(output_type="latent", **kwargs).images
                images = pipe(output_type="pt", **kwargs).images
            io[f"{name}_g{guidance}_latents"] = latents.contiguous()
            io[f"{name}_g{guidance}_images"] = images.contiguous()
            print(f"{name} guidance {guidance}: |latents| {latents.norm():.4f} image mean {images.mean():.4f}")
    save_file(io, os.path.join(OUT, "io.safetensors"))
    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump({"prompts": PROMPTS, "negative_prompt": NEGATIVE, "steps": STEPS, "height": 64, "width": 64}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
