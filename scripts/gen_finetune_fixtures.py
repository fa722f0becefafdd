"""Reference fixtures for one fine-tuning step of crates/trainer (`--init-from`),
from the training step of diffusers' examples/text_to_image/train_text_to_image.py.

    cargo xtask py scripts/gen_finetune_fixtures.py

For each tiny pipeline of crates/sampler/tests/fixtures/sd_tiny/ (`pipeline`:
epsilon prediction; `sd2_pipeline`: v-prediction, linear projections), loads
the components from the folder as the script does (CLIPTokenizer,
CLIPTextModel, AutoencoderKL, UNet2DConditionModel, and DDPMScheduler from
the `scheduler` subfolder), freezes the VAE and the text encoder, puts the
U-Net in training mode, and runs the body of the script's training loop on a
fixed batch with its random draws given as tensors:

- latents = (latent_dist.mean + latent_dist.std * latent_noise) * scaling_factor
  (what `latent_dist.sample()` computes from a draw `latent_noise`);
- noise, timesteps;
- noisy = scheduler.add_noise(latents, noise, timesteps); target = noise or
  scheduler.get_velocity(latents, noise, timesteps);
- loss = F.mse_loss(unet(noisy, timesteps, text_encoder(ids)[0]).float(), target.float());
  loss.backward().

Writes crates/trainer/tests/fixtures/finetune/<case>.safetensors with
pixel_values, latent_noise, noise, timesteps, loss and `grad.<name>` for every
U-Net parameter, and the captions in captions.json.
"""

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINES = os.path.join(ROOT, "crates", "sampler", "tests", "fixtures", "sd_tiny")
OUT = os.path.join(ROOT, "crates", "trainer", "tests", "fixtures", "finetune")
CAPTIONS = ["a red circle on a white field", "Two cats, 3 dogs!"]
CASES = {"sd1": "pipeline", "sd2_v": "sd2_pipeline"}


def step(folder, gen):
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.train()

    size = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    n = len(CAPTIONS)
    pixel_values = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    ids = tokenizer(
        CAPTIONS,
        max_length=tokenizer.model_max_length,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    ).input_ids

    dist = vae.encode(pixel_values).latent_dist
    latent_noise = torch.randn(dist.mean.shape, generator=gen)
    latents = (dist.mean + dist.std * latent_noise) * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen)
    timesteps = torch.tensor([37, 811][:n], dtype=torch.int64)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    states = text_encoder(ids, return_dict=False)[0]
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, timesteps)
    pred = unet(noisy, timesteps, states, return_dict=False)[0]
    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
    loss.backward()

    out = {
        "pixel_values": pixel_values,
        "latent_noise": latent_noise,
        "noise": noise,
        "timesteps": timesteps,
        "loss": loss.detach().reshape(1),
    }
    for name, p in unet.named_parameters():
        out[f"grad.{name}"] = p.grad.detach()
    return out, scheduler.config.prediction_type, loss.item()


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    for case, sub in CASES.items():
        gen = torch.Generator().manual_seed(5)
        out, prediction, loss = step(os.path.join(PIPELINES, sub), gen)
        save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, f"{case}.safetensors"))
        print(f"{case} ({sub}, {prediction}): loss {loss:.6f}, {len(out) - 5} gradients")
    with open(os.path.join(OUT, "captions.json"), "w") as f:
        json.dump({"captions": CAPTIONS}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
