"""Reference fixtures for crates/unet, from diffusers' UNet2DModel.

    cargo xtask py scripts/gen_unet_fixtures.py                  # write the fixtures
    cargo xtask py scripts/gen_unet_fixtures.py --check-ours DIR # check folders we saved

Default mode: for each case below, builds a small UNet2DModel with
torch.manual_seed, perturbs every parameter (so that GroupNorm weights and
biases are not ones and zeros), saves it with save_pretrained (safetensors)
into crates/unet/tests/fixtures/<case>/, and writes io.safetensors there with
the inputs (sample, timesteps, class_labels when conditional) and the
float32 forward output of the eval-mode model on CPU. It also writes
fixtures/presets.json: for each preset of UNetConfig, its config, the
state-dict shapes, the parameter count and the forward FLOPs per top-level
block at the sample size (torch.utils.flop_counter, batch 1, attention run
through the matmul processor so that its two matmuls are counted).

--check-ours DIR: DIR holds model folders written by the Rust crate
(`cargo run -p unet --example export_check -- DIR`), each with io.safetensors
holding the inputs and the output our implementation computed. Each folder
is loaded with UNet2DModel.from_pretrained; the check fails if a key is
missing or unexpected, or if the relative L2 error of diffusers' output
against ours exceeds 1e-4.
"""

import argparse
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "unet", "tests", "fixtures")
TOLERANCE = 1e-4

# Small models (a few tens of thousands of weights each) covering the options.
CASES = {
    # unconditional, 1 channel, 28 px through 3 levels (28 -> 14 -> 7 and
    # back), attention at the middle level and in the mid block, diffusers'
    # default sinusoidal embedding (flip_sin_to_cos, freq_shift 0).
    "uncond_grey28": dict(
        config=dict(
            sample_size=28,
            in_channels=1,
            out_channels=1,
            block_out_channels=[8, 16, 16],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4,
            attention_head_dim=8,
        ),
        batch=2,
        timesteps=torch.tensor([3, 977], dtype=torch.int64),
    ),
    # class-conditional (learned table), 3 channels, 32 px, scale_shift
    # ResNets (so the mid-block attention has no GroupNorm), DDPM's embedding
    # (no flip, freq_shift 1), one attention head over all channels,
    # asymmetric downsample padding, dropout (off in eval), float timesteps.
    "classcond_rgb32_scale_shift": dict(
        config=dict(
            sample_size=32,
            in_channels=3,
            out_channels=3,
            block_out_channels=[8, 16],
            layers_per_block=2,
            down_block_types=["AttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "AttnUpBlock2D"],
            norm_num_groups=4,
            norm_eps=1e-6,
            attention_head_dim=None,
            resnet_time_scale_shift="scale_shift",
            num_class_embeds=10,
            flip_sin_to_cos=False,
            freq_shift=1,
            downsample_padding=0,
            dropout=0.1,
        ),
        batch=3,
        timesteps=torch.tensor([0.5, 250.0, 999.0], dtype=torch.float32),
        class_labels=torch.tensor([0, 7, 9], dtype=torch.int64),
    ),
    # Gaussian Fourier features of log(sigma), output divided by sigma;
    # mish ResNets, centred input, mid-block attention with its own group
    # count and a mid-block scale factor.
    "fourier_grey16": dict(
        config=dict(
            sample_size=16,
            in_channels=1,
            out_channels=2,
            block_out_channels=[8, 16],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            norm_num_groups=4,
            attention_head_dim=4,
            time_embedding_type="fourier",
            act_fn="mish",
            center_input_sample=True,
            attn_norm_num_groups=2,
            mid_block_scale_factor=math.sqrt(2.0),
        ),
        batch=3,
        timesteps=torch.tensor([0.01, 1.0, 50.0], dtype=torch.float32),
    ),
    # class labels embedded like timesteps, ResNet down/upsamplers, no mid
    # block, a rectangular sample and one scalar timestep for the batch.
    "timestep_class_resnet_resample_rect": dict(
        config=dict(
            sample_size=[16, 24],
            in_channels=3,
            out_channels=3,
            block_out_channels=[8, 16],
            layers_per_block=1,
            down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"],
            norm_num_groups=4,
            attention_head_dim=8,
            class_embed_type="timestep",
            downsample_type="resnet",
            upsample_type="resnet",
            mid_block_type=None,
        ),
        batch=2,
        timesteps=torch.tensor(421, dtype=torch.int64),
        class_labels=torch.tensor([2.0, 5.0], dtype=torch.float32),
    ),
    # class embeddings given as vectors (identity), a custom time-embedding
    # width, a mid block without attention.
    "identity_class_no_mid_attn": dict(
        config=dict(
            sample_size=8,
            in_channels=2,
            out_channels=2,
            block_out_channels=[8, 16],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "UpBlock2D"],
            norm_num_groups=4,
            class_embed_type="identity",
            time_embedding_dim=40,
            add_attention=False,
        ),
        batch=2,
        timesteps=torch.tensor([10, 20], dtype=torch.int64),
        class_labels="randn:40",
    ),
}

# The presets of UNetConfig (crates/unet/src/config.rs), as diffusers kwargs.
PRESETS = {
    "ddpm-cifar10": dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        center_input_sample=False,
        time_embedding_type="positional",
        flip_sin_to_cos=False,
        freq_shift=1,
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[128, 256, 256, 256],
        layers_per_block=2,
        mid_block_scale_factor=1,
        downsample_padding=0,
        act_fn="silu",
        attention_head_dim=None,
        norm_num_groups=32,
        norm_eps=1e-6,
    ),
    "small-grey-28": dict(
        sample_size=28,
        in_channels=1,
        out_channels=1,
        down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        block_out_channels=[64, 128, 128],
        layers_per_block=2,
        attention_head_dim=32,
        norm_num_groups=32,
    ),
    "tiny": dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"],
        block_out_channels=[8, 16],
        layers_per_block=1,
        attention_head_dim=8,
        norm_num_groups=4,
    ),
}


def perturb(model, generator):
    """Moves every parameter off its default init, deterministically."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "norm" in name.split(".")[-2]:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            elif name == "time_proj.weight":
                pass  # Fourier frequencies: already N(0, 16^2)
            else:
                p.add_(0.05 * noise)


def sample_hw(cfg):
    s = cfg["sample_size"]
    return (s, s) if isinstance(s, int) else tuple(s)


def rel_l2(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def write_case(name, spec):
    torch.manual_seed(sum(map(ord, name)))
    cfg = spec["config"]
    model = UNet2DModel(**cfg).eval()
    gen = torch.Generator().manual_seed(1234)
    perturb(model, gen)
    n = spec["batch"]
    h, w = sample_hw(cfg)
    sample = torch.randn(n, cfg["in_channels"], h, w, generator=gen)
    inputs = {"sample": sample, "timesteps": spec["timesteps"]}
    labels = spec.get("class_labels")
    if isinstance(labels, str):
        dim = int(labels.split(":")[1])
        labels = torch.randn(n, dim, generator=gen)
    if labels is not None:
        inputs["class_labels"] = labels
    with torch.no_grad():
        out = model(sample, spec["timesteps"], class_labels=labels).sample
    folder = os.path.join(FIXTURES, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    tensors["output"] = out.contiguous()
    save_file(tensors, os.path.join(folder, "io.safetensors"))
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{name}: {sum(p.numel() for p in model.parameters())} weights, {size} bytes, output {tuple(out.shape)}")


def block_flops(model, h, w):
    """Forward FLOPs per top-level block for one h x w sample."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    for m in model.modules():  # matmuls the counter sees (it skips fused kernels)
        if isinstance(m, Attention):
            m.set_processor(AttnProcessor())
    x = torch.randn(1, model.config.in_channels, h, w)
    t = torch.tensor([10])
    labels = torch.tensor([0]) if model.config.num_class_embeds else None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, class_labels=labels)
    out = {}
    for module, ops in counter.get_flop_counts().items():
        parts = module.split(".")
        if len(parts) == 2 or (len(parts) == 3 and parts[1] in ("down_blocks", "up_blocks")):
            out[".".join(parts[1:])] = int(sum(ops.values()))
    return out, int(counter.get_total_flops())


def write_presets():
    out = {}
    for name, cfg in PRESETS.items():
        torch.manual_seed(0)
        model = UNet2DModel(**cfg)
        flops, total = block_flops(model, *sample_hw(cfg))
        out[name] = dict(
            config=cfg,
            shapes={k: list(v.shape) for k, v in model.state_dict().items()},
            num_parameters=sum(p.numel() for p in model.parameters()),
            flops=flops,
            total_flops=total,
        )
        print(f"preset {name}: {out[name]['num_parameters']} weights, {total} FLOPs")
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
        model = UNet2DModel.from_pretrained(folder, low_cpu_mem_usage=False).eval()
        theirs = set(model.state_dict().keys())
        missing, unexpected = sorted(theirs - set(ours)), sorted(set(ours) - theirs)
        io = load_file(os.path.join(folder, "io.safetensors"))
        with torch.no_grad():
            out = model(io["sample"], io["timesteps"], class_labels=io.get("class_labels")).sample
        err = rel_l2(out, io["output"])
        ok = not missing and not unexpected and err <= TOLERANCE
        failures += not ok
        print(
            f"{'ok  ' if ok else 'FAIL'} {name}: relative L2 {err:.3e}, "
            f"{len(ours)} tensors, missing {missing}, unexpected {unexpected}"
        )
    print(f"diffusers {diffusers.__version__}, torch {torch.__version__}: "
          f"{len(folders) - failures}/{len(folders)} folders load and agree")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check-ours", metavar="DIR", help="check model folders saved by the Rust crate")
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
