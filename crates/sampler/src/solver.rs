//! The [`Solver`] trait that every reverse-process solver implements, and
//! [`by_name`], which builds one from its name and a diffusers scheduler
//! config.
//!
//! A solver owns its list of inference timesteps. The sampling loop is the
//! same for all of them (see [`crate::sample()`]):
//!
//! ```text
//! x = x_T * init_noise_sigma()
//! for i in 0..timesteps().len():
//!     out = model(scale_model_input(x, i), timesteps()[i])
//!     x = step(out, i, x).prev_sample
//! ```
//!
//! The sigma-space solvers (Euler, Euler ancestral, Heun) keep their state
//! x = x_0 + sigma ε and scale the model input by 1/sqrt(sigma² + 1) and the
//! initial noise by sigma_max; the others have `init_noise_sigma() == 1` and
//! pass the sample through. Heun evaluates the model twice per step; like
//! diffusers, its timestep list repeats every timestep but the first.
//!
//! Each solver takes the keys it shares with a scheduler config exactly as
//! diffusers' `<Scheduler>.from_config(config)` does, and its own diffusers
//! defaults for the keys the file lacks (e.g. `dpm++2m` spaces its timesteps
//! with `linspace` unless the file says otherwise, `heun`'s betas default to
//! 0.00085..0.012).

use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};

use crate::noise::NoiseSource;
use crate::{ddim, ddpm, dpm_solver, euler, euler_ancestral, heun, Error, Result};

/// Which entry of [`Solver::timesteps`] the samples of a batch are at: the
/// same for the whole batch, or one per sample (for batches whose samples
/// start from different noise levels).
///
/// For the multistep and two-stage solvers (`dpm++2m`, `heun`) the samples of
/// a batch must have been stepped together from their first step: their
/// history is kept per call.
#[derive(Debug, Clone, Copy)]
pub enum StepIndex<'a> {
    /// Every sample is at this position.
    Batch(usize),
    /// Sample `k` is at position `v[k]`.
    PerSample(&'a [usize]),
}

impl From<usize> for StepIndex<'_> {
    fn from(i: usize) -> Self {
        StepIndex::Batch(i)
    }
}

impl<'a> From<&'a [usize]> for StepIndex<'a> {
    fn from(v: &'a [usize]) -> Self {
        StepIndex::PerSample(v)
    }
}

/// What a step returns.
#[derive(Debug)]
pub struct StepOutput {
    /// The sample at the next (less noisy) timestep.
    pub prev_sample: Tensor,
    /// The solver's prediction of the clean sample x_0 at this step (after
    /// clipping or thresholding where the solver applies them).
    pub pred_original_sample: Tensor,
}

/// A reverse-process solver. Build one with [`by_name`].
pub trait Solver: Send + std::fmt::Debug {
    /// The name [`by_name`] knows it by.
    fn name(&self) -> &'static str;

    /// The timesteps the model sees, one per model evaluation, noisiest
    /// first (fractional for the sigma-space solvers).
    fn timesteps(&self) -> &[f64];

    /// The kind of the timestep tensor given to the model: `Int64` where
    /// diffusers passes integer timesteps, `Float` where it passes floats.
    fn timestep_kind(&self) -> Kind;

    /// The factor on standard-normal noise that makes the initial sample.
    fn init_noise_sigma(&self) -> f64;

    /// The model input for the sample `x` at position `i`.
    fn scale_model_input(&self, x: &Tensor, i: StepIndex<'_>) -> Result<Tensor>;

    /// One step from position `i`: `model_output` is what the model returned
    /// for `scale_model_input(x, i)` at `timesteps()[i]`.
    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput>;

    /// Forgets the history of multistep and two-stage solvers, ready for a
    /// new batch.
    fn reset(&mut self);

    /// Whether [`Solver::step`] wants the model's predicted variance channels
    /// (`learned`/`learned_range` DDPM); the sampling loop drops them for
    /// every other solver.
    fn uses_predicted_variance(&self) -> bool {
        false
    }

    /// Model evaluations per inference step (diffusers' `order`): 2 for
    /// Heun, whose timestep list repeats every timestep but the first, 1 for
    /// the others.
    fn order(&self) -> usize {
        1
    }

    /// `(a, s)` such that a sample at position `i` is `a x_0 + s ε` in this
    /// solver's space, as diffusers' `add_noise` makes it at
    /// `timesteps()[i]`: (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) for DDPM
    /// and DDIM, (alpha_t, sigma_t) of the position's sigma for
    /// DPM-Solver++, (1, sigma_i) for the sigma-space solvers. Panics when
    /// `i >= timesteps().len()`.
    fn noise_coefficients(&self, i: usize) -> (f64, f64);
}

/// The forward process in a solver's space: `x_0` noised with the
/// standard-normal `noise` to position `i` of its timestep list (see
/// [`Solver::noise_coefficients`]), ready for [`Solver::step`] at `i`.
pub fn add_noise(solver: &dyn Solver, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
    let len = solver.timesteps().len();
    if i >= len {
        return Err(Error::Step(format!(
            "step index {i} is out of range: the solver has {len} timesteps"
        )));
    }
    if x0.size() != noise.size() {
        return Err(Error::Shape(format!(
            "x_0 has shape {:?} but the noise has shape {:?}",
            x0.size(),
            noise.size()
        )));
    }
    let (a, s) = solver.noise_coefficients(i);
    Ok(x0.f_mul_scalar(a)?.f_add(&noise.f_mul_scalar(s)?)?)
}

/// The number of inference steps of a solver: its timesteps divided by its
/// [`Solver::order`], rounded up.
pub fn inference_steps(solver: &dyn Solver) -> usize {
    solver.timesteps().len().div_ceil(solver.order().max(1))
}

/// The timesteps of position `i` as the tensor the model is given: `[n]`,
/// of [`Solver::timestep_kind`], on `device`.
pub fn model_timesteps(
    solver: &dyn Solver,
    i: StepIndex<'_>,
    n: i64,
    device: Device,
) -> Result<Tensor> {
    let ts = solver.timesteps();
    let idx = crate::common::indices(i, n, ts.len())?;
    let values: Vec<f64> = if idx.len() == 1 {
        vec![ts[idx[0]]; n as usize]
    } else {
        idx.iter().map(|&k| ts[k]).collect()
    };
    let t = Tensor::from_slice(&values);
    let t = match solver.timestep_kind() {
        Kind::Int64 => t.f_round()?.f_to_kind(Kind::Int64)?,
        kind => t.f_to_kind(kind)?,
    };
    Ok(t.f_to_device(device)?)
}

/// The solver names [`by_name`] accepts.
pub const SOLVER_NAMES: &[&str] = &["ddpm", "ddim", "dpm++2m", "euler", "euler-a", "heun"];

/// Run-time choices that are not in a scheduler config.
#[derive(Debug, Clone, Default)]
pub struct SolverOptions {
    /// DDIM's eta (0: deterministic DDIM, 1: DDPM-like); only `ddim` takes
    /// a non-zero value.
    pub eta: f64,
    /// Overrides the config's `use_karras_sigmas` (`dpm++2m`, `euler`,
    /// `heun`).
    pub use_karras_sigmas: Option<bool>,
}

/// Builds the solver `name` (see [`SOLVER_NAMES`]) for `steps` inference
/// steps from a diffusers scheduler config.
pub fn by_name(
    name: &str,
    config: &SchedulerConfig,
    steps: usize,
    options: &SolverOptions,
) -> Result<Box<dyn Solver>> {
    let canonical = match name.trim().to_ascii_lowercase().as_str() {
        "ddpm" => "ddpm",
        "ddim" => "ddim",
        "dpm++2m" | "dpm++" | "dpmsolver++" | "dpm-solver++" => "dpm++2m",
        "euler" => "euler",
        "euler-a" | "euler_a" | "euler-ancestral" => "euler-a",
        "heun" => "heun",
        _ => {
            return Err(Error::UnknownSolver {
                name: name.to_string(),
                valid: SOLVER_NAMES.join(", "),
            })
        }
    };
    if options.eta != 0.0 && canonical != "ddim" {
        return Err(Error::Unsupported(format!(
            "--eta {} applies to the ddim sampler only, not {canonical}",
            options.eta
        )));
    }
    if !(0.0..=f64::MAX).contains(&options.eta) {
        return Err(Error::Unsupported(format!(
            "--eta {}: expected a number >= 0",
            options.eta
        )));
    }
    if options.use_karras_sigmas == Some(true) && !matches!(canonical, "dpm++2m" | "euler" | "heun")
    {
        return Err(Error::Unsupported(format!(
            "Karras sigmas apply to dpm++2m, euler and heun, not {canonical}"
        )));
    }
    let karras = options.use_karras_sigmas;
    Ok(match canonical {
        "ddpm" => Box::new(ddpm::Ddpm::new(config, steps)?),
        "ddim" => Box::new(ddim::Ddim::new(config, steps, options.eta)?),
        "dpm++2m" => Box::new(dpm_solver::DpmSolverMultistep::new(config, steps, karras)?),
        "euler" => Box::new(euler::Euler::new(config, steps, karras)?),
        "euler-a" => Box::new(euler_ancestral::EulerAncestral::new(config, steps)?),
        _ => Box::new(heun::Heun::new(config, steps, karras)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let cfg = SchedulerConfig::default();
        let e = by_name("plms", &cfg, 10, &SolverOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"plms\"") && e.contains("ddpm, ddim, dpm++2m, euler, euler-a, heun"),
            "{e}"
        );
        for name in SOLVER_NAMES {
            let s = by_name(name, &cfg, 10, &SolverOptions::default()).unwrap();
            assert_eq!(s.name(), *name);
        }
    }

    #[test]
    fn steps_are_checked() {
        let cfg = SchedulerConfig::default();
        for name in SOLVER_NAMES {
            let e = by_name(name, &cfg, 1001, &SolverOptions::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("1001") && e.contains("1000"), "{name}: {e}");
            assert!(by_name(name, &cfg, 0, &SolverOptions::default()).is_err());
        }
        let eta = SolverOptions {
            eta: 0.5,
            ..Default::default()
        };
        assert!(by_name("euler", &cfg, 10, &eta).is_err());
        assert!(by_name("ddim", &cfg, 10, &eta).is_ok());
    }

    /// A run with per-sample positions (all equal) is the batch run, for
    /// every solver, the multistep and two-stage ones included.
    #[test]
    fn per_sample_positions_agree_with_batch_positions() {
        let cfg = SchedulerConfig::default();
        for name in SOLVER_NAMES {
            let mut runs = Vec::new();
            for per_sample in [false, true] {
                let mut s = by_name(name, &cfg, 6, &SolverOptions::default()).unwrap();
                tensor::seed::seed_everything(5);
                let mut x = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
                for i in 0..s.timesteps().len() {
                    let both = [i, i];
                    let at = if per_sample {
                        StepIndex::PerSample(&both)
                    } else {
                        StepIndex::Batch(i)
                    };
                    let input = s.scale_model_input(&x, at).unwrap();
                    let out = input.tanh() * 0.5;
                    x = s
                        .step(&out, at, &x, &mut crate::noise::TorchRng)
                        .unwrap()
                        .prev_sample;
                }
                runs.push(x);
            }
            let diff = (&runs[0] - &runs[1]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{name}: {diff}");
        }
    }

    #[test]
    fn euler_per_sample_positions_are_independent() {
        let cfg = SchedulerConfig::default();
        let mut s = by_name("euler", &cfg, 10, &SolverOptions::default()).unwrap();
        let x = Tensor::randn([2, 1, 3, 3], (Kind::Float, Device::Cpu));
        let out = x.tanh();
        let both = s
            .step(
                &out,
                StepIndex::PerSample(&[1, 8]),
                &x,
                &mut crate::noise::TorchRng,
            )
            .unwrap()
            .prev_sample;
        for (k, i) in [(0, 1), (1, 8)] {
            let one = s
                .step(
                    &out.narrow(0, k, 1),
                    StepIndex::Batch(i),
                    &x.narrow(0, k, 1),
                    &mut crate::noise::TorchRng,
                )
                .unwrap()
                .prev_sample;
            let diff = (one - both.narrow(0, k, 1)).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "sample {k}: {diff}");
        }
        let e = s
            .step(
                &out,
                StepIndex::PerSample(&[1]),
                &x,
                &mut crate::noise::TorchRng,
            )
            .unwrap_err();
        assert!(e.to_string().contains("batch of 2"), "{e}");
    }
}
