"""Reference fixtures for crates/unet's UNet2DConditionModel, from diffusers.

    cargo xtask py scripts/gen_unet_condition_fixtures.py                  # write the fixtures
    cargo xtask py scripts/gen_unet_condition_fixtures.py --check-ours DIR # check folders we saved

Default mode: for each case below, builds a tiny UNet2DConditionModel with
torch.manual_seed, moves every parameter off its init (so that norm weights
and biases are not ones and zeros), saves it with save_pretrained into
crates/unet/tests/fixtures/condition/<case>/, loads it back from that folder
(as a user would) and writes io.safetensors there: the inputs (sample,
timesteps, encoder_hidden_states, and encoder_attention_mask / class_labels
where the case has them) and the float32 output of the eval-mode model on
CPU.

--check-ours DIR: DIR holds model folders written by the Rust crate, each
with io.safetensors holding the inputs and the output our implementation
computed; each is loaded with UNet2DConditionModel.from_pretrained (strict
keys) and the relative L2 error of diffusers' output against ours must be
<= 1e-4.
"""

import argparse
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

from diffusers import UNet2DConditionModel
from gen_unet_fixtures import perturb, rel_l2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "unet", "tests", "fixtures", "condition")
TOLERANCE = 1e-4

CASES = {
    # Stable Diffusion 1.x's layout in miniature: conv proj_in/out, one
    # transformer layer, the same cross-attention width everywhere.
    "sd1_like": dict(
        config=dict(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=[16, 32],
            layers_per_block=1,
            down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=16,
            attention_head_dim=2,
            norm_num_groups=8,
        ),
        batch=2,
        hw=(8, 8),
        tokens=7,
    ),
    # Stable Diffusion 2.x's options: linear projections, upcast attention,
    # heads per block; plus per-block layer counts, cross-attention-only
    # blocks, an attention mask and a sample size that is not a multiple of
    # the downsampling factor (the upsamplers resize to the skips).
    "sd2_like_odd_size_mask": dict(
        config=dict(
            sample_size=12,
            in_channels=4,
            out_channels=4,
            block_out_channels=[16, 32, 32],
            layers_per_block=[1, 2, 1],
            transformer_layers_per_block=[1, 2, 1],
            down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            cross_attention_dim=24,
            attention_head_dim=[2, 4, 4],
            only_cross_attention=[False, True, False],
            use_linear_projection=True,
            upcast_attention=True,
            norm_num_groups=8,
        ),
        batch=2,
        hw=(9, 11),
        tokens=5,
        mask=True,
    ),
    # Class labels on top of text, FiLM ResNets, GELU, no mid block.
    "class_scale_shift_no_mid": dict(
        config=dict(
            sample_size=8,
            in_channels=3,
            out_channels=6,
            block_out_channels=[16, 32],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            mid_block_type=None,
            cross_attention_dim=12,
            attention_head_dim=2,
            norm_num_groups=8,
            num_class_embeds=5,
            resnet_time_scale_shift="scale_shift",
            act_fn="gelu",
            center_input_sample=True,
            flip_sin_to_cos=False,
            freq_shift=1,
        ),
        batch=3,
        hw=(8, 8),
        tokens=4,
        classes=5,
    ),
    # addition_embed_type "text": the pooled prompt added to the time
    # embedding (the captioned-digits preset's U-Net shape, smaller).
    "text_time_pooled": dict(
        config=dict(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=[16, 32],
            layers_per_block=1,
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            cross_attention_dim=16,
            attention_head_dim=2,
            norm_num_groups=8,
            addition_embed_type="text",
            addition_embed_type_num_heads=4,
        ),
        batch=3,
        hw=(8, 8),
        tokens=6,
        mask=True,
    ),
}


def forward(model, io):
    with torch.no_grad():
        return model(
            io["sample"],
            io["timesteps"],
            encoder_hidden_states=io["encoder_hidden_states"],
            encoder_attention_mask=io.get("encoder_attention_mask"),
            class_labels=io.get("class_labels"),
        ).sample


def write_case(name, spec):
    torch.manual_seed(sum(map(ord, name)))
    cfg = spec["config"]
    model = UNet2DConditionModel(**cfg).eval()
    gen = torch.Generator().manual_seed(7)
    perturb(model, gen)
    out_dir = os.path.join(FIXTURES, name)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    model = UNet2DConditionModel.from_pretrained(out_dir).eval()

    n, (h, w), s = spec["batch"], spec["hw"], spec["tokens"]
    io = {
        "sample": torch.randn(n, cfg["in_channels"], h, w, generator=gen),
        "timesteps": torch.tensor([10, 500, 999][:n], dtype=torch.int64),
        "encoder_hidden_states": torch.randn(n, s, cfg["cross_attention_dim"], generator=gen),
    }
    if spec.get("mask"):
        mask = torch.ones(n, s)
        mask[0, -2:] = 0.0
        io["encoder_attention_mask"] = mask
    if spec.get("classes"):
        io["class_labels"] = torch.arange(n, dtype=torch.int64) % spec["classes"]
    io["output"] = forward(model, io).contiguous()
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(out_dir, "io.safetensors"))
    params = sum(p.numel() for p in model.parameters())
    print(f"{name}: {params} parameters, output {tuple(io['output'].shape)}")


def check_ours(root):
    failures = 0
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        model = UNet2DConditionModel.from_pretrained(folder).eval()
        io = load_file(os.path.join(folder, "io.safetensors"))
        err = rel_l2(forward(model, io), io["output"])
        ok = err <= TOLERANCE
        failures += not ok
        print(f"{name}: relative L2 error {err:.3e} {'ok' if ok else 'FAIL'}")
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


if __name__ == "__main__":
    main()
