//! Parity with diffusers 0.42.1: every solver, run through the sampling loop
//! on an analytic model, reproduces the trajectories that
//! `scripts/gen_sampler_fixtures.py` recorded with diffusers (same
//! timesteps; final sample within 1e-3 relative L2 error in float32 on the
//! CPU, 5e-3 on CUDA: `LMZH_TEST_DEVICE=cuda` runs the loop there, as
//! `cargo xtask gpu-check` does).
//!
//! Regenerate the fixtures with `cargo xtask py scripts/gen_sampler_fixtures.py`.

use std::path::PathBuf;

use sampler::{
    by_name, default_for_config, sample, Conditioning, NoiseSource, ReplayNoise, SolverOptions,
};
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};

/// The crate folder: `CARGO_MANIFEST_DIR` as `cargo test` (or `cargo xtask
/// gpu-check --prebuilt`) sets it at run time, else where this binary was
/// built.
fn fixtures() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
}

/// `LMZH_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`, `auto`; default `cpu`).
fn test_device() -> Device {
    let spec = std::env::var("LMZH_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = spec
        .parse::<tensor::device::DeviceSpec>()
        .and_then(|d| d.resolve())
        .unwrap_or_else(|e| panic!("LMZH_TEST_DEVICE={spec:?}: {e}"));
    println!("parity device: {device:?} (LMZH_TEST_DEVICE={spec:?})");
    device
}

/// Relative L2 tolerance of a trajectory's end against diffusers: 1e-3 on
/// the CPU; 5e-3 on CUDA, whose exp/sqrt/tanh round differently and whose
/// differences add up over up to 1,000 steps.
fn tolerance(device: Device) -> f64 {
    if device.is_cuda() {
        5e-3
    } else {
        1e-3
    }
}

fn load_fixtures() -> (serde_json::Value, tensor::safetensors::NamedTensors) {
    let dir = fixtures();
    let cases = dir.join("cases.json");
    let text = std::fs::read_to_string(&cases).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with `cargo xtask py scripts/gen_sampler_fixtures.py`",
            cases.display()
        )
    });
    let tensors = tensor::safetensors::load(dir.join("trajectories.safetensors"), Device::Cpu)
        .expect(
        "tests/fixtures/trajectories.safetensors (cargo xtask py scripts/gen_sampler_fixtures.py)",
    );
    (serde_json::from_str(&text).unwrap(), tensors)
}

/// The script's model: f(x, t) = u x + (1 - u)(0.3 tanh x + 0.1 sin(t / 100) x),
/// u = t / 1000, plus variance channels tanh(x / 2) when `learned`.
fn analytic(x: &Tensor, t: &Tensor, learned: bool) -> Tensor {
    let ts: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu)).unwrap();
    let a: Vec<f64> = ts
        .iter()
        .map(|&t| {
            let u = t / 1000.0;
            u + (1.0 - u) * 0.1 * (t / 100.0).sin()
        })
        .collect();
    let b: Vec<f64> = ts.iter().map(|&t| (1.0 - t / 1000.0) * 0.3).collect();
    let col = |v: &[f64]| {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .reshape([-1, 1, 1, 1])
            .to_device(x.device())
    };
    let out = x * col(&a) + x.tanh() * col(&b);
    if learned {
        Tensor::cat(&[out, (x * 0.5).tanh()], 1)
    } else {
        out
    }
}

/// Deterministic solvers must not draw noise.
struct NoNoise;

impl NoiseSource for NoNoise {
    fn randn(&mut self, _: &[i64], _: Kind, _: Device) -> sampler::Result<Tensor> {
        panic!("a deterministic solver drew noise")
    }
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30)
}

#[test]
fn trajectories_match_diffusers() {
    let (meta, tensors) = load_fixtures();
    let device = test_device();
    let tol = tolerance(device);
    let x_t = &tensors["x_T"].to_device(device);
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 16, "too few cases in cases.json");
    println!("{:<40} {:>6} {:>12}", "case", "evals", "rel L2");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let solver_name = case["solver"].as_str().unwrap();
        let config = SchedulerConfig::from_json_str(&case["config"].to_string()).unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let options = SolverOptions {
            eta: case["eta"].as_f64().unwrap(),
            ..Default::default()
        };
        if case["config"].get("_class_name").is_some() {
            // A saved scheduler config names its solver.
            assert_eq!(default_for_config(&config), Some(solver_name), "{name}");
        }
        let mut solver = by_name(solver_name, &config, steps, &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_t: Vec<f64> = Vec::try_from(&tensors[&format!("{name}/timesteps")]).unwrap();
        // Equal, or (fractional Karras timesteps) within a float32 ulp:
        // numpy's float32 log may differ from libm's in the last bit.
        let same = solver.timesteps().len() == expected_t.len()
            && solver
                .timesteps()
                .iter()
                .zip(&expected_t)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0));
        if !same {
            failures.push(format!(
                "{name}: timesteps {:?} != diffusers {:?}",
                solver.timesteps(),
                expected_t
            ));
            continue;
        }
        let learned = solver.uses_predicted_variance();
        let model = |x: &Tensor, t: &Tensor, _: &sampler::Cond| Ok(analytic(x, t, learned));
        let result = if case["noise"].as_bool().unwrap() {
            let mut noise = ReplayNoise::new(&tensors[&format!("{name}/noise")]);
            let out = sample(
                &model,
                solver.as_mut(),
                x_t,
                &Conditioning::default(),
                &mut noise,
                &mut |_| {},
            );
            if noise.remaining() != 0 {
                failures.push(format!(
                    "{name}: {} recorded draws left unused",
                    noise.remaining()
                ));
            }
            out
        } else {
            sample(
                &model,
                solver.as_mut(),
                x_t,
                &Conditioning::default(),
                &mut NoNoise,
                &mut |_| {},
            )
        };
        let out = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = rel_l2(
            &out.to_device(Device::Cpu),
            &tensors[&format!("{name}/final")],
        );
        println!("{name:<40} {:>6} {err:>12.3e}", expected_t.len());
        worst = worst.max(err);
        if err.is_nan() || err > tol {
            failures.push(format!(
                "{name}: relative L2 error {err:.3e} > {tol:e} on {device:?}"
            ));
        }
    }
    println!("worst relative L2 error {worst:.3e} on {device:?} (tolerance {tol:e})");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// libtorch's global generator draws what torch draws after
/// `torch.manual_seed`, so `--seed` gives diffusers' noise.
#[test]
fn seeded_noise_matches_torch() {
    let (_, tensors) = load_fixtures();
    tensor::seed::seed_everything(1234);
    let ours = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    assert_eq!(ours, tensors["rng/seed1234"]);
}
