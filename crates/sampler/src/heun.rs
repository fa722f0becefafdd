//! Heun's second-order method on the probability-flow ODE in sigma space
//! (Karras et al. 2022, algorithm 1 without churn), diffusers'
//! `HeunDiscreteScheduler`.
//!
//! Each step from sigma to sigma' takes an Euler step to a trial x', then
//! evaluates the model again at sigma' and averages the two slopes:
//!
//! d = (x - x̂_0(x, sigma)) / sigma,  x' = x + d (sigma' - sigma),
//! d' = (x' - x̂_0(x', sigma')) / sigma',  x' = x + (d + d') / 2 (sigma' - sigma).
//!
//! The last step (to sigma' = 0) is a plain Euler step. Like diffusers, the
//! timestep list repeats every timestep but the first, so that the sampling
//! loop makes one model evaluation per entry: 2 · steps - 1 in all. Even
//! positions are first (Euler) stages, odd positions second stages.
//!
//! Config keys: `num_train_timesteps`, `beta_start` (default 0.00085),
//! `beta_end` (default 0.012), `beta_schedule`, `trained_betas`,
//! `prediction_type`, `use_karras_sigmas`, `use_exponential_sigmas`,
//! `clip_sample` (default false), `clip_sample_range`, `timestep_spacing`
//! (default `linspace`), `steps_offset`. Heun knows no
//! `rescale_betas_zero_snr` and no dynamic thresholding.

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::noise::NoiseSource;
use crate::numpy::f32r;
use crate::sigma::{init_noise_sigma, scale_by_sigma, sigma_setup, SigmaSpacing};
use crate::solver::{coef, indices, per, Solver, StepIndex, StepOutput};
use crate::x0::X0Processing;

/// The first stage's slope, step and starting point, per sample.
#[derive(Debug)]
struct FirstStage {
    derivative: Tensor,
    dt: Tensor,
    sample: Tensor,
}

/// diffusers' `HeunDiscreteScheduler`.
#[derive(Debug)]
pub struct Heun {
    /// 2 · steps - 1 model timesteps.
    timesteps: Vec<f64>,
    /// 2 · steps sigmas: s0, s1, s1, s2, s2, .., s_{n-1}, s_{n-1}, 0.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    x0: X0Processing,
    init_noise_sigma: f64,
    state: Option<FirstStage>,
}

impl Heun {
    /// Heun over `steps` steps as `HeunDiscreteScheduler.from_config(config)`
    /// with `set_timesteps(steps)`; `karras` overrides `use_karras_sigmas`.
    pub fn new(config: &SchedulerConfig, steps: usize, karras: Option<bool>) -> Result<Self> {
        let keys = Keys::new(config);
        let kind = SigmaSpacing::from_keys(keys, karras)?;
        let setup = sigma_setup(config, steps, (0.00085, 0.012), false, Some(kind))?;
        let base: Vec<f64> = setup
            .sigmas
            .iter()
            .map(|&s| f32r(s))
            .chain(std::iter::once(0.0))
            .collect();
        let n = base.len() - 1;
        let mut sigmas = vec![base[0]];
        for &s in &base[1..n] {
            sigmas.extend([s, s]);
        }
        sigmas.push(base[n]);
        let ts: Vec<f64> = setup.timesteps.iter().map(|&t| f32r(t)).collect();
        let mut timesteps = vec![ts[0]];
        for &t in &ts[1..] {
            timesteps.extend([t, t]);
        }
        let x0 = X0Processing::from_keys_clip_only(keys, config);
        Ok(Heun {
            init_noise_sigma: init_noise_sigma(&sigmas, setup.spacing),
            timesteps,
            sigmas,
            prediction: setup.prediction,
            x0,
            state: None,
        })
    }
}

impl Solver for Heun {
    fn name(&self) -> &'static str {
        "heun"
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn timestep_kind(&self) -> Kind {
        Kind::Float
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, x: &Tensor, i: StepIndex<'_>) -> Result<Tensor> {
        let idx = indices(i, x.size()[0], self.timesteps.len())?;
        scale_by_sigma(x, &per(&idx, |k| self.sigmas[k]))
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let idx = indices(i, x.size()[0], self.timesteps.len())?;
        // The model saw sigmas[j] in both stages.
        let sigma_in = per(&idx, |k| self.sigmas[k]);
        let level = NoiseLevel::Sigma(sigma_in.clone());
        let x0 = self
            .x0
            .apply(predicted_x0(self.prediction, model_output, x, &level)?)?;
        let inv: Vec<f64> = sigma_in.iter().map(|s| 1.0 / s).collect();
        let derivative = (x - &x0) * coef(&inv, x)?;
        let first: Vec<bool> = idx.iter().map(|k| k % 2 == 0).collect();
        let all_first = first.iter().all(|&f| f);

        let dt = coef(
            &per(&idx, |k| {
                if k % 2 == 0 {
                    self.sigmas[k + 1] - self.sigmas[k]
                } else {
                    0.0
                }
            }),
            x,
        )?;
        let euler = x + &derivative * &dt;
        let prev = if all_first {
            self.state = Some(FirstStage {
                derivative,
                dt,
                sample: x.shallow_clone(),
            });
            euler
        } else {
            let state = self.state.take().ok_or_else(|| {
                Error::Step(
                    "heun: a second stage without its first stage (step the positions in order)"
                        .into(),
                )
            })?;
            let averaged = (&state.derivative + &derivative) / 2.0;
            let second = &state.sample + averaged * &state.dt;
            if first.iter().any(|&f| f) {
                let mask = coef(
                    &first
                        .iter()
                        .map(|&f| if f { 1.0 } else { 0.0 })
                        .collect::<Vec<_>>(),
                    x,
                )?
                .f_gt(0.5)?;
                self.state = Some(FirstStage {
                    derivative: derivative.f_where_self(&mask, &state.derivative)?,
                    dt: dt.f_where_self(&mask, &state.dt)?,
                    sample: x.f_where_self(&mask, &state.sample)?,
                });
                euler.f_where_self(&mask, &second)?
            } else {
                second
            }
        };
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn reset(&mut self) {
        self.state = None;
    }

    fn order(&self) -> usize {
        2
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        (1.0, self.sigmas[i])
    }
}
