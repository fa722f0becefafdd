"""Reference outputs of text-guided editing, from diffusers'
StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline, for the
tests of crates/sampler (text_editing) and crates/cli (lmzh edit/inpaint
--prompt).

    cargo xtask py scripts/gen_sd_pipeline_fixtures.py   # first: the tiny pipeline
    cargo xtask py scripts/gen_sd_editing_fixtures.py

Uses the tiny SD-1.x-like pipeline of gen_sd_pipeline_fixtures.py
(crates/sampler/tests/fixtures/sd_tiny/pipeline) for image to image and for
inpainting with a plain 4-channel U-Net (mask blending), and builds beside it
a tiny inpainting pipeline whose U-Net takes 9 channels (latents, mask,
masked-image latents; as stable-diffusion-inpainting), sharing the text
encoder, tokenizer, VAE and scheduler. Writes two 64x64 input images and a
mask as PNG files, loads them with PIL as a user would, and runs each case
with `generator=torch.Generator().manual_seed(SEED)` (so the random draws are
the pipelines' own: VAE posterior samples and the noise), two prompts with a
negative prompt, 10 steps, schedulers from the pipeline's config. Saves the
final latents (output_type "latent") and images (output_type "pt", [0, 1])
to crates/sampler/tests/fixtures/sd_tiny/editing.safetensors and the cases
to editing.json.
"""

import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "sampler", "tests", "fixtures", "sd_tiny")
PIPE = os.path.join(OUT, "pipeline")
INPAINT = os.path.join(OUT, "inpaint_pipeline")
PROMPTS = ["a red circle on a white field", "Two cats, 3 dogs!"]
NEGATIVE = "blurry"
STEPS = 10
SEED = 7
SCHEDULERS = {
    "pndm": PNDMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
}
# (kind, scheduler, strength, guidance)
CASES = [
    ("img2img", "pndm", 0.6, 7.5),
    ("img2img", "ddim", 0.75, 1.0),
    ("img2img", "euler", 0.5, 7.5),
    ("img2img", "dpm++2m", 1.0, 7.5),
    ("inpaint", "pndm", 1.0, 7.5),
    ("inpaint", "ddim", 0.7, 7.5),
    ("inpaint", "euler", 1.0, 1.0),
    ("inpaint9", "pndm", 1.0, 7.5),
    ("inpaint9", "ddim", 0.8, 1.0),
]


def write_inputs():
    """Two 64x64 RGB pictures (gradients with a square) and a mask whose
    white rectangle is to be repainted."""
    y, x = np.mgrid[0:64, 0:64]
    images = []
    for k in range(2):
        rgb = np.stack(
            [
                (x * 4 + 40 * k) % 256,
                (y * 4) % 256,
                ((x + y) * 2 + 90 * k) % 256,
            ],
            axis=-1,
        ).astype(np.uint8)
        rgb[16 + 8 * k : 40 + 8 * k, 12:36] = [250, 30 + 100 * k, 20]
        path = os.path.join(OUT, f"edit_input_{k}.png")
        Image.fromarray(rgb).save(path)
        images.append(path)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[8:40, 24:60] = 255
    mask_path = os.path.join(OUT, "edit_mask.png")
    Image.fromarray(mask).save(mask_path)
    return images, mask_path


def build_inpainting_pipeline():
    """The tiny pipeline with a 9-channel U-Net, as a diffusers folder."""
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(4)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=9,
        out_channels=4,
        block_out_channels=[16, 32],
        layers_per_block=1,
        down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=8,
    ).eval()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    base = StableDiffusionInpaintPipeline.from_pretrained(PIPE, safety_checker=None)
    pipe = StableDiffusionInpaintPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    shutil.rmtree(INPAINT, ignore_errors=True)
    pipe.save_pretrained(INPAINT, safe_serialization=True)


def main():
    torch.set_num_threads(1)
    images, mask_path = write_inputs()
    build_inpainting_pipeline()
    pil = [Image.open(p).convert("RGB") for p in images]
    mask = Image.open(mask_path)
    pipes = {
        "img2img": StableDiffusionImg2ImgPipeline.from_pretrained(PIPE, safety_checker=None),
        "inpaint": StableDiffusionInpaintPipeline.from_pretrained(PIPE, safety_checker=None),
        "inpaint9": StableDiffusionInpaintPipeline.from_pretrained(INPAINT, safety_checker=None),
    }
    out = {}
    cases = []
    for kind, name, strength, guidance in CASES:
        pipe = pipes[kind]
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
        kwargs = dict(
            prompt=PROMPTS,
            image=pil,
            strength=strength,
            num_inference_steps=STEPS,
            guidance_scale=guidance,
        )
        if kind != "img2img":
            kwargs.update(mask_image=mask, height=64, width=64)
        if guidance > 1.0:
            kwargs["negative_prompt"] = [NEGATIVE] * len(PROMPTS)
        key = f"{kind}_{name}"
        with torch.no_grad():
            latents = pipe(output_type="latent", generator=torch.Generator().manual_seed(SEED), **kwargs).images
            pictures = pipe(output_type="pt", generator=torch.Generator().manual_seed(SEED), **kwargs).images
        out[f"{key}_latents"] = latents.contiguous()
        out[f"{key}_images"] = pictures.contiguous()
        cases.append(dict(key=key, kind=kind, sampler=name, strength=strength, guidance=guidance))
        print(f"{key} strength {strength} guidance {guidance}: |latents| {latents.norm():.4f} image mean {pictures.mean():.4f}")
    save_file(out, os.path.join(OUT, "editing.safetensors"))
    with open(os.path.join(OUT, "editing.json"), "w") as f:
        json.dump(
            dict(
                prompts=PROMPTS,
                negative_prompt=NEGATIVE,
                steps=STEPS,
                seed=SEED,
                images=[os.path.basename(p) for p in images],
                mask=os.path.basename(mask_path),
                cases=cases,
            ),
            f,
            indent=2,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
