//! The [`Solver`] trait that every reverse-process solver implements, its
//! step positions ([`StepIndex`]) and output ([`StepOutput`]), and the
//! per-sample helpers the solvers share. [`crate::factory::by_name`] builds
//! a solver from its name and a diffusers scheduler config.
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

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::noise::NoiseSource;

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

/// The positions a solver steps through: the timesteps the model sees, the
/// kind of the timestep tensor, and for the sigma-space solvers (see
/// [`mod@crate::sigma`]) the noise level of each position, which scales the
/// model input and the initial noise. Every solver holds one, and the
/// [`Solver`] methods that only read it are provided from it.
#[derive(Debug, Clone)]
pub struct Positions {
    timesteps: Vec<f64>,
    kind: Kind,
    sigma_space: Option<SigmaSpace>,
}

#[derive(Debug, Clone)]
struct SigmaSpace {
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

impl Positions {
    /// Positions whose model input is the sample as it is and whose initial
    /// noise is standard normal.
    pub(crate) fn discrete(timesteps: Vec<f64>, kind: Kind) -> Self {
        Positions {
            timesteps,
            kind,
            sigma_space: None,
        }
    }

    /// Sigma-space positions with float timesteps: `sigmas` holds one noise
    /// level per timestep and the final one; the model sees x / sqrt(sigma²
    /// + 1) and the initial noise is scaled by `init_noise_sigma`.
    pub(crate) fn sigma(timesteps: Vec<f64>, sigmas: Vec<f64>, init_noise_sigma: f64) -> Self {
        debug_assert_eq!(sigmas.len(), timesteps.len() + 1);
        Positions {
            timesteps,
            kind: Kind::Float,
            sigma_space: Some(SigmaSpace {
                sigmas,
                init_noise_sigma,
            }),
        }
    }

    /// The timesteps, one per model evaluation, noisiest first.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The noise levels of sigma-space positions (one per timestep, then the
    /// final one); empty for the others.
    pub fn sigmas(&self) -> &[f64] {
        self.sigma_space.as_ref().map_or(&[], |s| &s.sigmas)
    }

    /// The positions of step `i` for a batch like `x`, checked.
    pub(crate) fn indices(&self, i: StepIndex<'_>, x: &Tensor) -> Result<Vec<usize>> {
        indices(i, x.size()[0], self.timesteps.len())
    }
}

/// A reverse-process solver. Build one with [`crate::factory::by_name`].
pub trait Solver: Send + std::fmt::Debug {
    /// The name [`crate::factory::by_name`] knows it by.
    fn name(&self) -> &'static str;

    /// Its positions.
    fn positions(&self) -> &Positions;

    /// The timesteps the model sees, one per model evaluation, noisiest
    /// first (fractional for the sigma-space solvers).
    fn timesteps(&self) -> &[f64] {
        &self.positions().timesteps
    }

    /// The kind of the timestep tensor given to the model: `Int64` where
    /// diffusers passes integer timesteps, `Float` where it passes floats.
    fn timestep_kind(&self) -> Kind {
        self.positions().kind
    }

    /// The factor on standard-normal noise that makes the initial sample.
    fn init_noise_sigma(&self) -> f64 {
        self.positions()
            .sigma_space
            .as_ref()
            .map_or(1.0, |s| s.init_noise_sigma)
    }

    /// The model input for the sample `x` at position `i`.
    fn scale_model_input(&self, x: &Tensor, i: StepIndex<'_>) -> Result<Tensor> {
        let positions = self.positions();
        let idx = positions.indices(i, x)?;
        match &positions.sigma_space {
            None => Ok(x.shallow_clone()),
            Some(s) => {
                let c = per(&idx, |k| 1.0 / (s.sigmas[k] * s.sigmas[k] + 1.0).sqrt());
                Ok(x * coef(&c, x)?)
            }
        }
    }

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
    fn reset(&mut self) {}

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

    /// The number of inference steps it was built for: its timesteps
    /// divided by [`Solver::order`], rounded up, unless its list has extra
    /// evaluations (PNDM: `steps + 1` or `steps + 9` timesteps).
    fn num_inference_steps(&self) -> usize {
        self.timesteps().len().div_ceil(self.order().max(1))
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

/// The number of inference steps of a solver (see
/// [`Solver::num_inference_steps`]).
pub fn inference_steps(solver: &dyn Solver) -> usize {
    solver.num_inference_steps()
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
    let idx = indices(i, n, ts.len())?;
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

/// The positions in a solver's timestep list of a batch: one for all, or
/// one per sample; each checked against `len`.
pub(crate) fn indices(step: StepIndex<'_>, batch: i64, len: usize) -> Result<Vec<usize>> {
    let v = match step {
        StepIndex::Batch(i) => vec![i],
        StepIndex::PerSample(v) => {
            if v.len() as i64 != batch {
                return Err(Error::Step(format!(
                    "{} per-sample step indices for a batch of {batch}",
                    v.len()
                )));
            }
            v.to_vec()
        }
    };
    if let Some(bad) = v.iter().find(|&&i| i >= len) {
        return Err(Error::Step(format!(
            "step index {bad} is out of range: the solver has {len} timesteps"
        )));
    }
    Ok(v)
}

/// `f` applied to every index.
pub(crate) fn per<F: Fn(usize) -> f64>(idx: &[usize], f: F) -> Vec<f64> {
    idx.iter().map(|&i| f(i)).collect()
}

/// A per-sample coefficient as a tensor of shape `[len, 1, ..]` that
/// broadcasts against `like` (`len` is 1 or the batch size).
pub(crate) fn coef(values: &[f64], like: &Tensor) -> Result<Tensor> {
    Ok(schedule::batch::per_sample(values, like)?)
}
