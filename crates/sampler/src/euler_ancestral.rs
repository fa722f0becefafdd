//! Ancestral sampling with Euler steps (Karras et al. 2022, k-diffusion's
//! `sample_euler_ancestral`), diffusers' `EulerAncestralDiscreteScheduler`.
//!
//! In sigma space (see [`crate::sigma`]), each step from sigma to sigma'
//! splits sigma'² into a deterministic part sigma_down² and fresh noise
//! sigma_up² = sigma'² (sigma² - sigma'²) / sigma²:
//!
//! x' = x + (x - x̂_0) / sigma (sigma_down - sigma) + sigma_up z.
//!
//! Like diffusers it draws noise at every step, the last one included.
//! `prediction_type: sample` is accepted (x̂_0 is the output), which
//! diffusers leaves unimplemented.
//!
//! Config keys: `num_train_timesteps`, `beta_*`, `trained_betas`,
//! `prediction_type`, `timestep_spacing` (default `linspace`),
//! `steps_offset`, `rescale_betas_zero_snr`.

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::noise::NoiseSource;
use crate::numpy::f32r;
use crate::sigma::{init_noise_sigma, scale_by_sigma, sigma_setup, SigmaSpacing};
use crate::solver::{coef, indices, per, Solver, StepIndex, StepOutput};

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Debug)]
pub struct EulerAncestral {
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

impl EulerAncestral {
    /// Euler ancestral over `steps` steps as
    /// `EulerAncestralDiscreteScheduler.from_config(config)` with
    /// `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let setup = sigma_setup(
            config,
            steps,
            (0.0001, 0.02),
            true,
            SigmaSpacing::Timesteps,
            (None, None),
        )?;
        let mut sigmas: Vec<f64> = setup.sigmas.iter().map(|&s| f32r(s)).collect();
        sigmas.push(0.0);
        Ok(EulerAncestral {
            init_noise_sigma: init_noise_sigma(&sigmas, setup.spacing),
            timesteps: setup.timesteps,
            sigmas,
            prediction: setup.prediction,
        })
    }
}

impl Solver for EulerAncestral {
    fn name(&self) -> &'static str {
        "euler-a"
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
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let idx = indices(i, x.size()[0], self.timesteps.len())?;
        let sigma = per(&idx, |k| self.sigmas[k]);
        let level = NoiseLevel::Sigma(sigma.clone());
        let x0 = predicted_x0(self.prediction, model_output, x, &level)?;
        let mut up = Vec::with_capacity(idx.len());
        let mut dt = Vec::with_capacity(idx.len());
        for &k in &idx {
            let (from, to) = (self.sigmas[k], self.sigmas[k + 1]);
            let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
            let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
            up.push(sigma_up);
            dt.push(sigma_down - from);
        }
        let inv: Vec<f64> = sigma.iter().map(|s| 1.0 / s).collect();
        let derivative = (x - &x0) * coef(&inv, x)?;
        let prev = x + derivative * coef(&dt, x)?;
        let z = noise.randn(
            &model_output.size(),
            model_output.kind(),
            model_output.device(),
        )?;
        Ok(StepOutput {
            prev_sample: prev + z * coef(&up, x)?,
            pred_original_sample: x0,
        })
    }

    fn reset(&mut self) {}

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        (1.0, self.sigmas[i])
    }
}
