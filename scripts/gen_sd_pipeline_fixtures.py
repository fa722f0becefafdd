"""A tiny Stable-Diffusion-1.x-like pipeline and its reference outputs, from
diffusers and transformers, for the text-to-image tests of crates/sampler
and crates/cli.

    cargo xtask py scripts/gen_sd_pipeline_fixtures.py
    cargo xtask py scripts/gen_sd_pipeline_fixtures.py --check-ours DIR   # a pipeline we saved

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

Then the same for a tiny Stable-Diffusion-2.x-like pipeline in
sd_tiny/sd2_pipeline/ (keys `sd2_*`): the SD 2 text encoder and tokenizer of
crates/text/tests/fixtures/sd2-tiny (exact-erf GELU, pad token "!"), a U-Net
with SD 2's linear proj_in/proj_out, per-block head counts and
upcast_attention, and SD 2.1's DDIMScheduler config (v_prediction).
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
TEXT2 = os.path.join(ROOT, "crates", "text", "tests", "fixtures", "sd2-tiny")
OUT = os.path.join(ROOT, "crates", "sampler", "tests", "fixtures", "sd_tiny")
PIPE = os.path.join(OUT, "pipeline")
PIPE2 = os.path.join(OUT, "sd2_pipeline")
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


def build_sd2():
    torch.manual_seed(10)
    gen = torch.Generator().manual_seed(11)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=[16, 32],
        layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=[2, 4],
        use_linear_projection=True,
        upcast_attention=True,
        norm_num_groups=8,
    ).eval()
    perturb(unet, gen)
    vae = AutoencoderKL.from_pretrained(os.path.join(PIPE, "vae"))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
    )
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(TEXT2, "text_encoder")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(TEXT2, "tokenizer"))
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
    shutil.rmtree(PIPE2, ignore_errors=True)
    pipe.save_pretrained(PIPE2, safe_serialization=True)


def run_all(path, io, prefix):
    """Every scheduler, with and without guidance, from io["latents"]."""
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
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
            io[f"{prefix}{name}_g{guidance}_latents"] = latents.contiguous()
            io[f"{prefix}{name}_g{guidance}_images"] = images.contiguous()
            print(f"{prefix}{name} guidance {guidance}: |latents| {latents.norm():.4f} image mean {images.mean():.4f}")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    build()
    gen = torch.Generator().manual_seed(2)
    io = {"latents": torch.randn(len(PROMPTS), 4, 8, 8, generator=gen)}
    run_all(PIPE, io, "")
    build_sd2()
    run_all(PIPE2, io, "sd2_")
    save_file(io, os.path.join(OUT, "io.safetensors"))
    with open(os.path.join(OUT, "prompts.json"), "w") as f:
        json.dump({"prompts": PROMPTS, "negative_prompt": NEGATIVE, "steps": STEPS, "height": 64, "width": 64}, f, indent=2)
        f.write("\n")


def check_ours(path):
    """Loads a pipeline folder that `TextToImage::save` wrote (from
    sd2_pipeline) with diffusers and compares its DDIM and Euler outputs,
    with and without guidance, with the fixtures."""
    from safetensors.torch import load_file

    io = load_file(os.path.join(OUT, "io.safetensors"))
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    base = pipe.scheduler.config
    worst = 0.0
    for name in ("ddim", "euler"):
        pipe.scheduler = SCHEDULERS[name].from_config(base)
        for guidance in (1.0, 7.5):
            kwargs = dict(prompt=PROMPTS, num_inference_steps=STEPS, guidance_scale=guidance,
                          latents=io["latents"].clone(), height=64, width=64)
            if guidance > 1.0:
                kwargs["negative_prompt"] = [NEGATIVE] * len(PROMPTS)
            with torch.no_grad():
                latents = pipe(output_type="latent", **kwargs).images
            want = io[f"sd2_{name}_g{guidance}_latents"]
            err = ((latents - want).norm() / want.norm()).item()
            worst = max(worst, err)
            print(f"{name} guidance {guidance}: relative L2 error {err:.2e}")
    print(f"worst {worst:.2e}")
    assert worst <= 1e-5, worst


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--check-ours":
        check_ours(sys.argv[2])
    else:
        main()
