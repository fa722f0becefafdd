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

use schedule::{PredictionType, SchedulerConfig};
use tch::Tensor;

use crate::error::Result;
use crate::noise::NoiseSource;
use crate::sigma::{sigma_setup, SigmaSpacing, SigmaStart};
use crate::solver::{coef, Positions, Solver, StepIndex, StepOutput};
use crate::x0::X0Processing;

/// diffusers' `EulerAncestralDiscreteScheduler`.
#[derive(Debug)]
pub struct EulerAncestral {
    positions: Positions,
    prediction: PredictionType,
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
        let sigmas = setup.sigmas_then(0.0);
        Ok(EulerAncestral {
            positions: setup.positions(setup.timesteps.clone(), sigmas),
            prediction: setup.prediction,
        })
    }
}

impl Solver for EulerAncestral {
    fn name(&self) -> &'static str {
        "euler-a"
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let start = SigmaStart::new(
            &self.positions,
            self.prediction,
            &X0Processing::None,
            model_output,
            x,
            i,
        )?;
        let sigmas = self.positions.sigmas();
        let mut up = Vec::with_capacity(start.idx.len());
        let mut dt = Vec::with_capacity(start.idx.len());
        for &k in &start.idx {
            let (from, to) = (sigmas[k], sigmas[k + 1]);
            let sigma_up = (to * to * (from * from - to * to) / (from * from)).sqrt();
            let sigma_down = (to * to - sigma_up * sigma_up).sqrt();
            up.push(sigma_up);
            dt.push(sigma_down - from);
        }
        let prev = x + start.slope * coef(&dt, x)?;
        let z = noise.randn(
            &model_output.size(),
            model_output.kind(),
            model_output.device(),
        )?;
        Ok(StepOutput {
            prev_sample: prev + z * coef(&up, x)?,
            pred_original_sample: start.x0,
        })
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        (1.0, self.positions.sigmas()[i])
    }
}
