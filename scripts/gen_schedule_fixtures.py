"""Reference noise schedules for the parity tests of crates/schedule.

Run: cargo xtask py scripts/gen_schedule_fixtures.py

diffusers builds its betas in float32; the Rust crate works in float64. This
script computes every schedule the way diffusers 0.42.1 does
(`DDPMScheduler.__init__`, `betas_for_alpha_bar`, `rescale_zero_terminal_snr`)
but in float64, checks that diffusers' own float32 `DDPMScheduler` agrees with
that reference to float32 precision, and writes:

- crates/schedule/tests/fixtures/schedules.json: betas and alphas_cumprod
  (float64) for linear, scaled_linear, squaredcos_cap_v2 and sigmoid, each
  with and without rescale_betas_zero_snr, at 1000 and 50 train timesteps;
- crates/schedule/tests/fixtures/diffusers_configs/*.json: scheduler configs
  as diffusers' `save_config` writes them, for the config round-trip test.
"""

import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import diffusers
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "schedule" / "tests" / "fixtures"

# (beta_schedule, beta_start, beta_end): DDPM defaults, and Stable Diffusion's
# numbers for scaled_linear (the schedule it was made for).
SCHEDULES = [
    ("linear", 0.0001, 0.02),
    ("scaled_linear", 0.00085, 0.012),
    ("squaredcos_cap_v2", 0.0001, 0.02),
    ("sigmoid", 0.0001, 0.02),
]
TIMESTEPS = [1000, 50]


def cosine_betas_f64(n, max_beta=0.999):
    """diffusers.schedulers.scheduling_ddpm.betas_for_alpha_bar("cosine"),
    line for line, without its final cast to float32."""

    def alpha_bar_fn(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = []
    for i in range(n):
        t1 = i / n
        t2 = (i + 1) / n
        betas.append(min(1 - alpha_bar_fn(t2) / alpha_bar_fn(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float64)


def betas_f64(schedule, n, beta_start, beta_end):
    """DDPMScheduler.__init__'s branches, in float64."""
    f64 = torch.float64
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=f64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=f64) ** 2
    if schedule == "squaredcos_cap_v2":
        return cosine_betas_f64(n)
    if schedule == "sigmoid":
        betas = torch.linspace(-6, 6, n, dtype=f64)
        return torch.sigmoid(betas) * (beta_end - beta_start) + beta_start
    raise ValueError(schedule)


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def main():
    assert diffusers.__version__ == "0.42.1", diffusers.__version__
    cases = []
    worst = {"betas": 0.0, "alphas_cumprod": 0.0}
    for schedule, beta_start, beta_end in SCHEDULES:
        for rescale in (False, True):
            for n in TIMESTEPS:
                betas = betas_f64(schedule, n, beta_start, beta_end)
                if rescale:
                    # diffusers' own function; it is dtype-agnostic.
                    betas = rescale_zero_terminal_snr(betas)
                assert betas.dtype == torch.float64
                alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

                # diffusers itself, in float32.
                ref32 = DDPMScheduler(
                    num_train_timesteps=n,
                    beta_start=beta_start,
                    beta_end=beta_end,
                    beta_schedule=schedule,
                    rescale_betas_zero_snr=rescale,
                )
                assert ref32.betas.dtype == torch.float32
                eb = max_abs(ref32.betas, betas)
                ea = max_abs(ref32.alphas_cumprod, alphas_cumprod)
                # float32 rounding of each beta (~6e-8 relative), plus what a
                # float32 cumprod over up to 1000 factors accumulates; the
                # zero-SNR rescale divides nearly equal float32 alpha_bars near
                # the end, which costs a few more bits on the last betas.
                assert eb <= (2e-5 if rescale else 2e-7), (schedule, rescale, n, eb)
                assert ea <= 5e-6, (schedule, rescale, n, ea)
                if schedule == "squaredcos_cap_v2" and not rescale:
                    # Same Python-float computation, one cast: bit-identical.
                    assert torch.equal(ref32.betas, betas.float()), schedule
                worst["betas"] = max(worst["betas"], eb)
                worst["alphas_cumprod"] = max(worst["alphas_cumprod"], ea)
                print(
                    f"{schedule:>17} rescale={rescale!s:<5} n={n:<4} "
                    f"|diffusers f32 - f64 ref|: betas {eb:.2e}, alphas_cumprod {ea:.2e}"
                )
                cases.append(
                    {
                        "beta_schedule": schedule,
                        "beta_start": beta_start,
                        "beta_end": beta_end,
                        "num_train_timesteps": n,
                        "rescale_betas_zero_snr": rescale,
                        "betas": betas.tolist(),
                        "alphas_cumprod": alphas_cumprod.tolist(),
                    }
                )
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/gen_schedule_fixtures.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "cases": cases,
    }
    path = OUT / "schedules.json"
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({len(cases)} cases); worst float32 gap {worst}")

    configs = {
        "ddpm_cosine_v": DDPMScheduler(
            beta_schedule="squaredcos_cap_v2",
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
        ),
        "ddpm_default": DDPMScheduler(),
        "ddim_sd": DDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
        ),
        "dpm_solver": DPMSolverMultistepScheduler(),
    }
    cfg_dir = OUT / "diffusers_configs"
    cfg_dir.mkdir(exist_ok=True)
    for name, sched in configs.items():
        with tempfile.TemporaryDirectory() as tmp:
            sched.save_config(tmp)
            shutil.copyfile(Path(tmp) / "scheduler_config.json", cfg_dir / f"{name}.json")
        print(f"wrote {(cfg_dir / f'{name}.json').relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
