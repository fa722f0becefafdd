//! The Euler method on the probability-flow ODE in sigma space (Karras et
//! al. 2022, algorithm 2 without churn), diffusers' `EulerDiscreteScheduler`.
//!
//! The state is x = x_0 + sigma ε with sigma_t = sqrt((1 - alpha_bar_t) /
//! alpha_bar_t); the model sees x / sqrt(sigma² + 1) (the DDPM-space x_t) and
//! the initial noise is scaled by sigma_max (by sqrt(sigma_max² + 1) with
//! `leading` spacing). One step:
//!
//! d = (x - x̂_0) / sigma,  x' = x + d (sigma' - sigma).
//!
//! The sigmas are interpolated from the training table at the inference
//! timesteps, or Karras / exponential noise levels between the table's ends
//! (then the timesteps are the fractional training timesteps of those
//! sigmas), followed by 0 (or sigma_min with `final_sigmas_type:
//! sigma_min`).
//!
//! Config keys: `num_train_timesteps`, `beta_*`, `trained_betas`,
//! `prediction_type`, `interpolation_type` (`linear` only),
//! `use_karras_sigmas`, `use_exponential_sigmas`, `sigma_min`, `sigma_max`,
//! `timestep_spacing` (default `linspace`), `timestep_type`, `steps_offset`,
//! `rescale_betas_zero_snr`, `final_sigmas_type`.

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::keys::Keys;
use crate::noise::NoiseSource;
use crate::numpy::f32r;
use crate::sigma::{init_noise_sigma, scale_by_sigma, sigma_setup, SigmaSpacing};
use crate::solver::{coef, indices, per, Solver, StepIndex, StepOutput};

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Debug)]
pub struct Euler {
    timesteps: Vec<f64>,
    /// One per timestep plus the final one.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl Euler {
    /// Euler over `steps` steps as `EulerDiscreteScheduler.from_config(config)`
    /// with `set_timesteps(steps)`; `karras` overrides `use_karras_sigmas`.
    pub fn new(config: &SchedulerConfig, steps: usize, karras: Option<bool>) -> Result<Self> {
        let keys = Keys::new(config);
        keys.choice("interpolation_type", "linear", &["linear"])?;
        let timestep_type =
            keys.choice("timestep_type", "discrete", &["discrete", "continuous"])?;
        let final_type = keys.choice("final_sigmas_type", "zero", &["zero", "sigma_min"])?;
        let kind = SigmaSpacing::from_keys(keys, karras)?;
        let setup = sigma_setup(config, steps, (0.0001, 0.02), true, Some(kind))?;
        let last = if final_type == "zero" {
            0.0
        } else {
            f64::from(setup.tables.sigmas()[0])
        };
        let mut sigmas: Vec<f64> = setup.sigmas.iter().map(|&s| f32r(s)).collect();
        sigmas.push(last);
        let timesteps =
            if timestep_type == "continuous" && setup.prediction == PredictionType::VPrediction {
                sigmas[..sigmas.len() - 1]
                    .iter()
                    .map(|&s| f64::from((s as f32).ln() * 0.25))
                    .collect()
            } else {
                setup.timesteps.iter().map(|&t| f32r(t)).collect()
            };
        Ok(Euler {
            init_noise_sigma: init_noise_sigma(&sigmas, setup.spacing),
            timesteps,
            sigmas,
            prediction: setup.prediction,
        })
    }

    /// The noise levels, one per timestep plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl Solver for Euler {
    fn name(&self) -> &'static str {
        "euler"
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
        let sigma = per(&idx, |k| self.sigmas[k]);
        let level = NoiseLevel::Sigma(sigma.clone());
        let x0 = predicted_x0(self.prediction, model_output, x, &level)?;
        let inv: Vec<f64> = sigma.iter().map(|s| 1.0 / s).collect();
        let derivative = (x - &x0) * coef(&inv, x)?;
        let dt = per(&idx, |k| self.sigmas[k + 1] - self.sigmas[k]);
        Ok(StepOutput {
            prev_sample: x + derivative * coef(&dt, x)?,
            pred_original_sample: x0,
        })
    }

    fn reset(&mut self) {}

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        (1.0, self.sigmas[i])
    }
}

#[cfg(test)]
mod tests {
    use schedule::TimestepSpacing;

    use super::*;

    #[test]
    fn init_noise_sigma_follows_the_spacing() {
        let mut cfg = SchedulerConfig::from_json_str("{}").unwrap();
        let e = Euler::new(&cfg, 10, None).unwrap();
        assert_eq!(e.timesteps()[0], 999.0);
        let max = e.sigmas()[0];
        assert_eq!(e.init_noise_sigma(), max);
        assert_eq!(*e.sigmas().last().unwrap(), 0.0);
        cfg.timestep_spacing = TimestepSpacing::Leading;
        cfg.absent_keys.remove("timestep_spacing");
        let e = Euler::new(&cfg, 10, None).unwrap();
        assert_eq!(e.timesteps()[0], 900.0);
        let s = e.sigmas()[0] as f32;
        assert_eq!(e.init_noise_sigma(), f64::from((s * s + 1.0).sqrt()));
    }
}
