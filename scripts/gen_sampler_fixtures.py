"""Reference trajectories for the parity tests of crates/sampler.

Run: cargo xtask py scripts/gen_sampler_fixtures.py [--recompute-all]

Tensors already in the fixture files are kept as they are: the script
recomputes them, checks that they agree with the stored ones (relative L2
error <= 1e-4; the last bits differ between machines, whose vectorised
float32 math and numpy logs round differently) and writes only the new
cases' tensors, so that adding cases does not churn the existing ones.
`--recompute-all` rewrites everything (after a change of the reference
version or of the cases' definitions).

Every case runs one diffusers 0.42.1 scheduler, built with
`<Scheduler>.from_config(config)` and `set_timesteps(steps)`, through the
loop diffusers' pipelines use (x = x_T * init_noise_sigma; for each t:
scale_model_input, model, step) on CPU in float32. The "model" is analytic,
so that the test does not depend on a U-Net, and the Rust test implements it
identically:

    f(x, t) = u * x + (1 - u) * (0.3 * tanh(x) + 0.1 * sin(t / 100) * x),
    u = t / 1000,

with t the timestep the scheduler passes to the model, as a float. Near
t = T it returns about x, the right noise for pure noise, so that epsilon
models do not predict huge x_0 at the first steps (which would make the
comparison about the first step only). The output is read as epsilon, x_0 or v according to the config's
`prediction_type`. For `variance_type: learned_range` the model also returns
the variance channels tanh(0.5 * x) (so its output has twice the channels).

Stochastic steps (DDPM, DDIM with eta > 0, Euler ancestral) draw their noise
from a seeded torch.Generator; every draw is recorded (diffusers'
`randn_tensor` is wrapped) and stored, so that the Rust test can replay the
same noise in the same order.

Writes crates/sampler/tests/fixtures/:

- cases.json: for each case its name, solver (our name), diffusers class,
  config (exactly the dict given to from_config), steps, eta, and whether it
  has recorded noise;
- trajectories.safetensors: `x_T` [2, 1, 8, 8] (shared by all cases), and per
  case `<name>/timesteps` (float64, what the model saw, in order),
  `<name>/final` (float32, the sample after the last step) and, for
  stochastic cases, `<name>/noise` [draws, 2, 1, 8, 8];
  `rng/seed1234`: torch.manual_seed(1234); torch.randn(2, 1, 8, 8), to check
  that libtorch's global generator draws what torch draws;
- tiny_pipeline/: a DDPMPipeline folder (model_index.json, unet/,
  scheduler/) with a tiny seeded UNet2DModel; tiny_pipeline_ddim10.safetensors
  holds `noise` [2, 1, 16, 16], the `timesteps` and the `samples` that DDIM
  (from the pipeline's scheduler config, 10 steps, eta 0) produces from that
  noise.
"""

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    UNet2DModel,
)
import diffusers.schedulers.scheduling_ddim as m_ddim
import diffusers.schedulers.scheduling_ddpm as m_ddpm
import diffusers.schedulers.scheduling_euler_ancestral_discrete as m_euler_a

assert diffusers.__version__ == "0.42.1", diffusers.__version__

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "sampler" / "tests" / "fixtures"

CLASSES = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-a": EulerAncestralDiscreteScheduler,
    "heun": HeunDiscreteScheduler,
    "pndm": PNDMScheduler,
}

SHAPE = (2, 1, 8, 8)
NOISE_SEED = 20240601
# Recomputed tensors must agree with the stored ones this well to be kept.
KEEP_TOLERANCE = 1e-4


def keep_existing(path, tensors):
    """`tensors` with the entries already stored in `path` kept as stored,
    after checking that the recomputed ones agree; prints the worst error."""
    if not path.exists():
        return tensors
    stored = load_file(str(path))
    worst, worst_key = 0.0, None
    for key, old in stored.items():
        if key not in tensors:
            continue
        new = tensors[key]
        if old.shape != new.shape:
            sys.exit(f"{path.name}: {key}: stored shape {tuple(old.shape)}, recomputed {tuple(new.shape)}; "
                     "rerun with --recompute-all if the case changed")
        denom = old.double().norm().item() or 1.0
        err = (old.double() - new.double()).norm().item() / denom
        if err > worst:
            worst, worst_key = err, key
        if err > KEEP_TOLERANCE:
            sys.exit(f"{path.name}: {key}: recomputed differs from the stored tensor by {err:.3e} "
                     "(relative L2); rerun with --recompute-all if the reference changed")
        tensors[key] = old
    kept = sum(k in stored for k in tensors)
    print(f"{path.name}: kept {kept} stored tensors (recomputed within {worst:.3e}"
          f"{f', worst {worst_key}' if worst_key else ''}), {len(tensors) - kept} new")
    return tensors


def model(x, t, learned_range=False):
    """The analytic model; t is the scheduler's timestep (int or float)."""
    u = float(t) / 1000.0
    a = u + (1.0 - u) * 0.1 * math.sin(float(t) / 100.0)
    b = (1.0 - u) * 0.3
    out = a * x + b * torch.tanh(x)
    if learned_range:
        out = torch.cat([out, torch.tanh(0.5 * x)], dim=1)
    return out


# Recording wrapper around diffusers' randn_tensor in the modules that draw.
RECORDED = []
_ORIGINAL_RANDN = m_ddpm.randn_tensor


def recording_randn(*args, **kwargs):
    t = _ORIGINAL_RANDN(*args, **kwargs)
    RECORDED.append(t.clone())
    return t


for module in (m_ddim, m_ddpm, m_euler_a):
    module.randn_tensor = recording_randn


def base(schedule, **extra):
    """A config as a DDPM training run would save it, plus solver keys."""
    cfg = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule=schedule)
    cfg.update(extra)
    return cfg


def build_cases():
    cases = []

    def add(name, solver, config, steps, eta=0.0):
        cases.append(dict(name=name, solver=solver, config=config, steps=steps, eta=eta))

    # The grid of the issue: 4 solvers x 2 step counts x 2 schedules.
    for solver in ["ddim", "dpm++2m", "euler", "heun"]:
        for steps in [10, 50]:
            for schedule in ["linear", "squaredcos_cap_v2"]:
                add(f"{solver}_{schedule}_{steps}", solver, base(schedule), steps)
    # All three prediction types.
    for solver in ["ddim", "dpm++2m", "euler", "heun"]:
        for pred in ["sample", "v_prediction"]:
            add(f"{solver}_linear_10_{pred}", solver, base("linear", prediction_type=pred), 10)
    add("euler-a_linear_10_v_prediction", "euler-a", base("linear", prediction_type="v_prediction"), 10)
    # Timestep spacings and steps_offset.
    for solver in ["ddim", "dpm++2m", "euler", "heun", "ddpm"]:
        add(f"{solver}_leading_offset1_20", solver, base("linear", timestep_spacing="leading", steps_offset=1), 20)
        add(f"{solver}_trailing_30", solver, base("linear", timestep_spacing="trailing"), 30)
        add(f"{solver}_linspace_25", solver, base("squaredcos_cap_v2", timestep_spacing="linspace"), 25)
    # x0 clipping off, dynamic thresholding.
    add("ddim_noclip_10", "ddim", base("linear", clip_sample=False), 10)
    add(
        "ddim_thresholding_10",
        "ddim",
        base("linear", thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
        10,
    )
    add(
        "dpm++2m_thresholding_10",
        "dpm++2m",
        base("linear", thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5),
        10,
    )
    add("ddim_no_alpha_to_one_10", "ddim", base("linear", set_alpha_to_one=False), 10)
    # Zero terminal SNR with trailing spacing and v-prediction (Lin et al.).
    add(
        "ddim_zero_snr_trailing_v_10",
        "ddim",
        base("linear", rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"),
        10,
    )
    add(
        "euler_zero_snr_trailing_v_10",
        "euler",
        base("linear", rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"),
        10,
    )
    # DPM-Solver++ options.
    for order in [1, 3]:
        for steps in [10, 20]:
            add(f"dpm++2m_order{order}_{steps}", "dpm++2m", base("linear", solver_order=order), steps)
    add("dpm++2m_heun_type_20", "dpm++2m", base("linear", solver_type="heun"), 20)
    add("dpm++2m_no_lower_order_final_10", "dpm++2m", base("linear", lower_order_final=False), 10)
    add("dpm++2m_karras_20", "dpm++2m", base("linear", use_karras_sigmas=True), 20)
    add("dpm++2m_sigma_min_final_20", "dpm++2m", base("linear", final_sigmas_type="sigma_min"), 20)
    add("dpm++2m_lambda_clipped_10", "dpm++2m", base("squaredcos_cap_v2", lambda_min_clipped=-5.1), 10)
    add("dpm++2m_euler_at_final_20", "dpm++2m", base("linear", euler_at_final=True), 20)
    # Karras sigmas for the sigma-space solvers.
    add("euler_karras_15", "euler", base("linear", use_karras_sigmas=True), 15)
    add("heun_karras_15", "heun", base("linear", use_karras_sigmas=True), 15)
    add("euler_sigma_min_final_10", "euler", base("linear", final_sigmas_type="sigma_min"), 10)
    # Heun's own defaults (beta_start 0.00085, beta_end 0.012) for the keys
    # a file does not have.
    add("heun_own_defaults_10", "heun", dict(num_train_timesteps=1000, beta_schedule="linear"), 10)
    add("heun_clip_10", "heun", base("linear", clip_sample=True, prediction_type="sample"), 10)
    # Stochastic solvers with recorded noise.
    add("ddim_eta1_10", "ddim", base("linear"), 10, eta=1.0)
    add("ddim_eta0.5_cosine_20", "ddim", base("squaredcos_cap_v2"), 20, eta=0.5)
    for variance in ["fixed_small", "fixed_small_log", "fixed_large", "learned_range"]:
        add(f"ddpm_{variance}_20", "ddpm", base("linear", variance_type=variance), 20)
    add("ddpm_linear_100", "ddpm", base("linear"), 100)
    add("ddpm_v_cosine_10", "ddpm", base("squaredcos_cap_v2", prediction_type="v_prediction"), 10)
    add("euler-a_linear_10", "euler-a", base("linear"), 10)
    add("euler-a_cosine_50", "euler-a", base("squaredcos_cap_v2"), 50)
    # PNDM. Stable Diffusion 1.x's scheduler_config.json (PLMS: skip_prk_steps,
    # scaled_linear 0.00085..0.012, steps_offset 1, set_alpha_to_one false),
    # key for key; then PNDMScheduler's defaults (Runge-Kutta warm-up).
    sd = dict(
        _class_name="PNDMScheduler",
        _diffusers_version="0.6.0",
        beta_end=0.012,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        trained_betas=None,
        clip_sample=False,
    )
    for steps in [10, 20, 50]:
        add(f"pndm_sd_plms_{steps}", "pndm", sd, steps)
    add("pndm_sd_plms_v_prediction_25", "pndm", dict(sd, prediction_type="v_prediction"), 25)
    for steps in [10, 50]:
        add(f"pndm_default_{steps}", "pndm", {}, steps)
    add("pndm_prk_v_prediction_cosine_20", "pndm", base("squaredcos_cap_v2", prediction_type="v_prediction"), 20)
    add("pndm_prk_alpha_to_one_4", "pndm", base("linear", set_alpha_to_one=True), 4)
    add("pndm_plms_trailing_30", "pndm", base("linear", skip_prk_steps=True, timestep_spacing="trailing"), 30)
    add("pndm_prk_linspace_25", "pndm", base("linear", timestep_spacing="linspace"), 25)
    add("pndm_plms_leading_offset1_7", "pndm", base("linear", skip_prk_steps=True, steps_offset=1), 7)
    add("pndm_plms_1", "pndm", base("linear", skip_prk_steps=True, set_alpha_to_one=True), 1)
    add("pndm_plms_2", "pndm", base("scaled_linear", skip_prk_steps=True), 2)
    return cases


def run_case(case, x_T):
    cls = CLASSES[case["solver"]]
    sched = cls.from_config(case["config"])
    sched.set_timesteps(case["steps"])
    learned = case["config"].get("variance_type") == "learned_range" and case["solver"] == "ddpm"
    generator = torch.Generator().manual_seed(NOISE_SEED)
    RECORDED.clear()
    x = x_T * sched.init_noise_sigma
    seen = []
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        out = model(inp, t, learned_range=learned)
        seen.append(float(t))
        kwargs = {}
        if case["solver"] == "ddim":
            kwargs["eta"] = case["eta"]
        if case["solver"] in ("ddpm", "ddim", "euler-a", "dpm++2m", "euler"):
            kwargs["generator"] = generator
        x = sched.step(out, t, x, **kwargs).prev_sample
    noise = torch.stack(RECORDED) if RECORDED else None
    return torch.tensor(seen, dtype=torch.float64), x.float().contiguous(), noise


def tiny_pipeline(out_dir, recompute_all):
    """A DDPMPipeline folder with a tiny seeded UNet2DModel, and DDIM's
    10-step output on fixed noise."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=1,
        out_channels=1,
        block_out_channels=[8, 16],
        layers_per_block=1,
        down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"],
        norm_num_groups=4,
        attention_head_dim=8,
    )
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.eval()
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    folder = out_dir / "tiny_pipeline"
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)

    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(7)
    noise = torch.randn((2, 1, 16, 16), generator=g)
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(out, t, x, eta=0.0).prev_sample
    path = out_dir / "tiny_pipeline_ddim10.safetensors"
    tensors = {
        "noise": noise.contiguous(),
        "timesteps": sched.timesteps.to(torch.float64).contiguous(),
        "samples": x.float().contiguous(),
    }
    if not recompute_all:
        tensors = keep_existing(path, tensors)
    save_file(tensors, str(path))
    print(f"tiny_pipeline: DDIM 10 steps, |samples| mean {x.abs().mean():.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recompute-all", action="store_true",
                        help="rewrite the stored tensors too, not only the new cases'")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1234)
    rng_check = torch.randn(SHAPE)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(42))
    tensors = {"x_T": x_T.contiguous(), "rng/seed1234": rng_check.contiguous()}
    meta = []
    for case in build_cases():
        timesteps, final, noise = run_case(case, x_T)
        name = case["name"]
        assert torch.isfinite(final).all(), name
        tensors[f"{name}/timesteps"] = timesteps
        tensors[f"{name}/final"] = final
        if noise is not None:
            tensors[f"{name}/noise"] = noise.float().contiguous()
        meta.append(
            dict(
                name=name,
                solver=case["solver"],
                diffusers_class=CLASSES[case["solver"]].__name__,
                config=case["config"],
                steps=case["steps"],
                eta=case["eta"],
                noise=noise is not None,
            )
        )
        print(f"{name:40s} steps={len(timesteps):4d} |x0| mean {final.abs().mean():.4f}")
    if not args.recompute_all:
        tensors = keep_existing(OUT / "trajectories.safetensors", tensors)
    save_file(tensors, str(OUT / "trajectories.safetensors"))
    with open(OUT / "cases.json", "w") as f:
        json.dump(dict(diffusers_version=diffusers.__version__, cases=meta), f, indent=1)
        f.write("\n")
    tiny_pipeline(OUT, args.recompute_all)


if __name__ == "__main__":
    main()
