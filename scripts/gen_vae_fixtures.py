"""Reference fixtures for crates/vae, from diffusers' AutoencoderKL.

    cargo xtask py scripts/gen_vae_fixtures.py                  # write the fixtures
    cargo xtask py scripts/gen_vae_fixtures.py --check-ours DIR # check folders we saved

Default mode: for each case below, builds a small AutoencoderKL with
torch.manual_seed, perturbs every parameter (so that GroupNorm weights and
biases are not ones and zeros), saves it with save_pretrained (safetensors)
into crates/vae/tests/fixtures/<case>/, loads it back with from_pretrained,
as a user would, and writes io.safetensors there with, from the reloaded
model in eval mode on CPU in float32:

- `images` [N, C, H, W] in [-1, 1]: `mean` and `logvar` of encode(images)
  (logvar clamped, as the posterior holds it); `sample`: the posterior's
  sample() right after torch.manual_seed(SAMPLE_SEED) (libtorch's global
  generator);
- `latents`: random diffusion-model latents; `decoded`: decode(latents /
  scaling_factor + shift_factor), the pipelines' decoding; `scaled_mean`:
  (mean - shift_factor) * scaling_factor, the pipelines' encoding;
- with tiling on (enable_tiling): `tiled_images` (larger than a tile) with
  their `tiled_mean`, `tiled_logvar`, and `tiled_latents` with their
  `tiled_decoded` (unscaled latents).

It also writes fixtures/presets.json: for each preset of VaeConfig, its
config, the state-dict names and shapes and the parameter count.

--check-ours DIR: DIR holds VAE folders written by the Rust crate
(`cargo run -p vae --example export_vae_check -- DIR`), each with
io.safetensors holding the inputs and the outputs our implementation
computed. Each folder is loaded with AutoencoderKL.from_pretrained; the check
fails if a key is missing or unexpected, or if the relative L2 error of
diffusers' outputs against ours exceeds 1e-4.
"""

import argparse
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import AutoencoderKL

assert diffusers.__version__ == "0.42.1", diffusers.__version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "vae", "tests", "fixtures")
TOLERANCE = 1e-4
SAMPLE_SEED = 4321

CASES = {
    # Stable Diffusion's layout scaled down: RGB 32 px, two levels (8x8 -> 16x16
    # latents), one ResNet per encoder level, attention in the mid blocks,
    # quant convs, scaling factor 0.18215.
    "kl_rgb32": dict(
        config=dict(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2,
            block_out_channels=[16, 24],
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=32,
        ),
        batch=2,
        hw=(32, 32),
        # tiles: 32 px / 16 latents; 48 px images and 24-latent maps take 2x2 tiles
        tiled_hw=(48, 48),
        tiled_latent_hw=(24, 24),
    ),
    # No quant convs, no mid-block attention, a shift factor (as SD3 and FLUX
    # use), three levels, two ResNets per level, mish, one input and two
    # output channels, a rectangular input.
    "shift_noquant_noattn": dict(
        config=dict(
            in_channels=1,
            out_channels=2,
            down_block_types=["DownEncoderBlock2D"] * 3,
            up_block_types=["UpDecoderBlock2D"] * 3,
            block_out_channels=[8, 8, 16],
            layers_per_block=2,
            norm_num_groups=4,
            latent_channels=3,
            act_fn="mish",
            sample_size=16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
            mid_block_add_attention=False,
        ),
        batch=1,
        hw=(16, 24),
    ),
}

# The presets of VaeConfig (crates/vae/src/config.rs), as diffusers kwargs:
# the vae/config.json of stable-diffusion-v1-5.
PRESETS = {
    "stable-diffusion": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        act_fn="silu",
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    ),
}


def perturb(model, generator):
    """Moves every parameter off its default init, deterministically."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name.split(".")[-2]:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.add_(0.05 * noise)


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def latent_hw(cfg, h, w):
    f = 2 ** (len(cfg["block_out_channels"]) - 1)
    return h // f, w // f


def write_case(name, spec):
    torch.manual_seed(sum(map(ord, name)))
    cfg = spec["config"]
    model = AutoencoderKL(**cfg).eval()
    gen = torch.Generator().manual_seed(1234)
    perturb(model, gen)
    folder = os.path.join(FIXTURES, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    model = AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False).eval()
    conf = model.config
    shift = conf.shift_factor or 0.0

    n, (h, w) = spec["batch"], spec["hw"]
    images = torch.rand(n, cfg["in_channels"], h, w, generator=gen) * 2 - 1
    latents = torch.randn(n, cfg["latent_channels"], *latent_hw(cfg, h, w), generator=gen)
    out = {"images": images, "latents": latents}
    with torch.no_grad():
        posterior = model.encode(images).latent_dist
        out["mean"], out["logvar"] = posterior.mean, posterior.logvar
        torch.manual_seed(SAMPLE_SEED)
        out["sample"] = posterior.sample()
        out["scaled_mean"] = (posterior.mode() - shift) * conf.scaling_factor
        out["decoded"] = model.decode(latents / conf.scaling_factor + shift).sample
        if "tiled_hw" in spec:
            model.enable_tiling()
            th, tw = spec["tiled_hw"]
            tiled_images = torch.rand(1, cfg["in_channels"], th, tw, generator=gen) * 2 - 1
            tiled_latents = torch.randn(1, cfg["latent_channels"], *spec["tiled_latent_hw"], generator=gen)
            tiled = model.encode(tiled_images).latent_dist
            out["tiled_images"], out["tiled_latents"] = tiled_images, tiled_latents
            out["tiled_mean"], out["tiled_logvar"] = tiled.mean, tiled.logvar
            out["tiled_decoded"] = model.decode(tiled_latents).sample
            model.disable_tiling()
            # The tiles make a difference (else the test would not test them).
            plain = model.decode(tiled_latents).sample
            assert rel_l2(plain, out["tiled_decoded"]) > 1e-3
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(folder, "io.safetensors"))
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} weights, {size} bytes")


def write_presets():
    out = {}
    for name, cfg in PRESETS.items():
        torch.manual_seed(0)
        model = AutoencoderKL(**cfg)
        out[name] = dict(
            config=cfg,
            shapes={k: list(v.shape) for k, v in model.state_dict().items()},
            num_parameters=sum(p.numel() for p in model.parameters()),
        )
        print(f"preset {name}: {out[name]['num_parameters']} weights")
    with open(os.path.join(FIXTURES, "presets.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def check_ours(root):
    failures = 0
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        print(f"no model folders in {root}")
        return 1
    for name in folders:
        folder = os.path.join(root, name)
        ours = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
        model = AutoencoderKL.from_pretrained(folder, low_cpu_mem_usage=False).eval()
        theirs = set(model.state_dict().keys())
        missing, unexpected = sorted(theirs - set(ours)), sorted(set(ours) - theirs)
        io = load_file(os.path.join(folder, "io.safetensors"))
        with torch.no_grad():
            posterior = model.encode(io["images"]).latent_dist
            decoded = model.decode(io["latents"]).sample
        errs = {
            "mean": rel_l2(posterior.mean, io["mean"]),
            "logvar": rel_l2(posterior.logvar, io["logvar"]),
            "decoded": rel_l2(decoded, io["decoded"]),
        }
        ok = not missing and not unexpected and max(errs.values()) <= TOLERANCE
        failures += not ok
        shown = ", ".join(f"{k} {v:.3e}" for k, v in errs.items())
        print(
            f"{'ok  ' if ok else 'FAIL'} {name}: relative L2 {shown}; "
            f"{len(ours)} tensors, missing {missing}, unexpected {unexpected}"
        )
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}: "
          f"{len(folders) - failures}/{len(folders)} folders load and agree")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-ours", metavar="DIR", help="check VAE folders saved by the Rust crate")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check_ours:
        sys.exit(check_ours(args.check_ours))
    os.makedirs(FIXTURES, exist_ok=True)
    for name, spec in CASES.items():
        write_case(name, spec)
    write_presets()


if __name__ == "__main__":
    main()
