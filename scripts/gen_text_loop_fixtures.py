"""Reference fixtures for crates/sampler's sampling loop on a text-conditioned
U-Net, from diffusers: the denoising loop of StableDiffusionPipeline from
fixed latents and fixed prompt embeddings.

    cargo xtask py scripts/gen_text_loop_fixtures.py

Loads the tiny UNet2DConditionModel of crates/unet/tests/fixtures/condition/
sd1_like and, for each scheduler below, a Stable-Diffusion-style scheduler
config written to crates/sampler/tests/fixtures/text_loop/<name>/ and read
back with from_pretrained (as a user would). Runs the pipeline's loop
(latents * init_noise_sigma; per timestep: the batch doubled for guidance,
unconditional half first, scale_model_input, the U-Net, uncond + g (cond -
uncond), scheduler.step) for 10 steps with guidance 1 (no unconditional
branch), 7.5 (a negative prompt shared by the batch) and 7.5 with
guidance_rescale 0.7 (rescale_noise_cfg), and saves the
inputs and the final latents to crates/sampler/tests/fixtures/text_loop/
io.safetensors.
"""

import json
import os
import shutil

import torch
from safetensors.torch import save_file

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(ROOT, "crates", "unet", "tests", "fixtures", "condition", "sd1_like")
OUT = os.path.join(ROOT, "crates", "sampler", "tests", "fixtures", "text_loop")
STEPS = 10

# Stable Diffusion 1.x's scheduler settings.
SD = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
)
SCHEDULERS = {
    "ddim": (DDIMScheduler, dict(SD, clip_sample=False, set_alpha_to_one=False)),
    "euler": (EulerDiscreteScheduler, dict(SD, timestep_spacing="leading")),
    "dpm++2m": (DPMSolverMultistepScheduler, dict(SD)),
}


def run_loop(unet, scheduler, latents, prompt, negative, guidance, rescale=0.0):
    scheduler.set_timesteps(STEPS)
    latents = latents * scheduler.init_noise_sigma
    n = latents.shape[0]
    if guidance > 1.0:
        embeds = torch.cat([negative.expand(n, -1, -1), prompt])
    else:
        embeds = prompt
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if guidance > 1.0 else latents
            model_input = scheduler.scale_model_input(model_input, t)
            pred = unet(model_input, t, encoder_hidden_states=embeds).sample
            if guidance > 1.0:
                uncond, cond = pred.chunk(2)
                pred = uncond + guidance * (cond - uncond)
                if rescale > 0.0:
                    pred = rescale_noise_cfg(pred, cond, guidance_rescale=rescale)
            latents = scheduler.step(pred, t, latents).prev_sample
    return latents


def main():
    torch.set_num_threads(1)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    unet = UNet2DConditionModel.from_pretrained(UNET).eval()
    gen = torch.Generator().manual_seed(11)
    width = unet.config.cross_attention_dim
    io = {
        "latents": torch.randn(2, 4, 8, 8, generator=gen),
        "prompt_embeds": torch.randn(2, 7, width, generator=gen),
        "negative_prompt_embeds": torch.randn(1, 7, width, generator=gen),
    }
    for name, (cls, cfg) in SCHEDULERS.items():
        folder = os.path.join(OUT, name)
        cls(**cfg).save_pretrained(folder)
        scheduler = cls.from_pretrained(folder)
        for guidance in (1.0, 7.5):
            out = run_loop(
                unet, scheduler, io["latents"], io["prompt_embeds"], io["negative_prompt_embeds"], guidance
            )
            io[f"{name}_g{guidance}"] = out.contiguous()
            print(f"{name} guidance {guidance}: |latents| {out.norm():.4f}")
        out = run_loop(
            unet, scheduler, io["latents"], io["prompt_embeds"], io["negative_prompt_embeds"], 7.5, 0.7
        )
        io[f"{name}_g7.5_rescale0.7"] = out.contiguous()
    save_file(io, os.path.join(OUT, "io.safetensors"))


if __name__ == "__main__":
    main()
