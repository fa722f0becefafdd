"""Pack a training run's diffusers export into a small bundled model folder.

    cargo run --release -p trainer            # default preset, seed 0
    cargo xtask py scripts/pack_model.py runs/<run> assets/models/digits

Copies `model_index.json`, `run.json`, `scheduler/` and `unet/config.json`
and writes the U-Net weights (the EMA weights the trainer exports) as
float16, which halves the file; `UNet::load` converts back to float32.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: pack_model.py RUN_DIR OUT_DIR")
    run, out = Path(sys.argv[1]), Path(sys.argv[2])
    (out / "unet").mkdir(parents=True, exist_ok=True)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    for name in ["model_index.json", "run.json", "unet/config.json",
                 "scheduler/scheduler_config.json"]:
        shutil.copyfile(run / name, out / name)
    weights = load_file(run / "unet/diffusion_pytorch_model.safetensors")
    half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
    save_file(half, out / "unet/diffusion_pytorch_model.safetensors",
              metadata={"format": "pt", "packed_from": json.dumps(str(run.name))})
    total = sum(v.numel() for v in half.values())
    print(f"{out}: {len(half)} tensors, {total} parameters, float16")


if __name__ == "__main__":
    main()
