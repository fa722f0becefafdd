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

use schedule::{PredictionType, SchedulerConfig};
use tch::Tensor;

use crate::error::Result;
use crate::extra::{set_opt_f64, set_str, Extra};
use crate::noise::NoiseSource;
use crate::numpy::f32r;
use crate::sigma::{sigma_setup, FinalSigmas, SigmaSpacing, SigmaStart};
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
use crate::x0::X0Processing;

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Debug)]
pub struct Euler {
    /// One sigma per timestep plus the final one.
    positions: Positions,
    prediction: PredictionType,
}

/// Euler's timesteps for the model (diffusers' `timestep_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepType {
    /// Training timesteps (the default).
    #[default]
    Discrete,
    /// ln(sigma) / 4 for v-prediction models (EDM-style), else as `Discrete`.
    Continuous,
}

/// How Euler interpolates the training sigmas (diffusers'
/// `interpolation_type`; `log_linear` is not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InterpolationType {
    /// Linear in the timestep (the default).
    #[default]
    Linear,
}

/// Euler's options: its `EulerDiscreteScheduler` keys beyond
/// [`SchedulerConfig`]'s typed fields, with diffusers' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EulerOptions {
    /// `use_karras_sigmas` / `use_exponential_sigmas`.
    pub sigma_spacing: SigmaSpacing,
    /// The smallest Karras or exponential sigma (default: the table's).
    pub sigma_min: Option<f64>,
    /// The largest Karras or exponential sigma (default: the table's).
    pub sigma_max: Option<f64>,
    /// `final_sigmas_type`.
    pub final_sigmas_type: FinalSigmas,
    /// `timestep_type`.
    pub timestep_type: TimestepType,
    /// `interpolation_type`.
    pub interpolation_type: InterpolationType,
}

impl EulerOptions {
    /// The options a scheduler config sets, diffusers' defaults for the
    /// keys it lacks.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        extra.choice("interpolation_type", "linear", &["linear"])?;
        let timestep_type = match extra
            .choice("timestep_type", "discrete", &["discrete", "continuous"])?
            .as_str()
        {
            "continuous" => TimestepType::Continuous,
            _ => TimestepType::Discrete,
        };
        Ok(EulerOptions {
            sigma_spacing: SigmaSpacing::from_config(config)?,
            sigma_min: extra.opt_f64("sigma_min")?,
            sigma_max: extra.opt_f64("sigma_max")?,
            final_sigmas_type: FinalSigmas::from_config(config)?,
            timestep_type,
            interpolation_type: InterpolationType::Linear,
        })
    }

    /// Writes the config keys of these options.
    pub fn write_to(&self, config: &mut SchedulerConfig) {
        self.sigma_spacing.write_to(config);
        set_opt_f64(config, "sigma_min", self.sigma_min);
        set_opt_f64(config, "sigma_max", self.sigma_max);
        self.final_sigmas_type.write_to(config);
        let timestep_type = match self.timestep_type {
            TimestepType::Discrete => "discrete",
            TimestepType::Continuous => "continuous",
        };
        set_str(config, "timestep_type", timestep_type);
        set_str(config, "interpolation_type", "linear");
    }
}

impl Euler {
    /// Euler over `steps` steps as `EulerDiscreteScheduler.from_config(config)`
    /// with `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_options(config, steps, EulerOptions::from_config(config)?)
    }

    /// Euler over `steps` steps with the schedule keys of `config` and the
    /// given options (the config's option keys are not read).
    pub fn with_options(
        config: &SchedulerConfig,
        steps: usize,
        options: EulerOptions,
    ) -> Result<Self> {
        let setup = sigma_setup(
            config,
            steps,
            (0.0001, 0.02),
            true,
            options.sigma_spacing,
            (options.sigma_min, options.sigma_max),
        )?;
        let last = match options.final_sigmas_type {
            FinalSigmas::Zero => 0.0,
            FinalSigmas::SigmaMin => f64::from(setup.tables.sigmas()[0]),
        };
        let sigmas = setup.sigmas_then(last);
        let continuous = options.timestep_type == TimestepType::Continuous;
        let timesteps = if continuous && setup.prediction == PredictionType::VPrediction {
            sigmas[..sigmas.len() - 1]
                .iter()
                .map(|&s| f64::from((s as f32).ln() * 0.25))
                .collect()
        } else {
            setup.timesteps.iter().map(|&t| f32r(t)).collect()
        };
        Ok(Euler {
            positions: setup.positions(timesteps, sigmas),
            prediction: setup.prediction,
        })
    }

    /// The noise levels, one per timestep plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        self.positions.sigmas()
    }
}

impl Solver for Euler {
    fn name(&self) -> &'static str {
        "euler"
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
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
        let dt = per(&start.idx, |k| sigmas[k + 1] - sigmas[k]);
        Ok(StepOutput {
            prev_sample: x + start.slope * coef(&dt, x)?,
            pred_original_sample: start.x0,
        })
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        (1.0, self.sigmas()[i])
    }
}

#[cfg(test)]
mod tests {
    use schedule::TimestepSpacing;

    use super::*;

    #[test]
    fn init_noise_sigma_follows_the_spacing() {
        let mut cfg = SchedulerConfig::from_json_str("{}").unwrap();
        let e = Euler::new(&cfg, 10).unwrap();
        assert_eq!(e.timesteps()[0], 999.0);
        let max = e.sigmas()[0];
        assert_eq!(e.init_noise_sigma(), max);
        assert_eq!(*e.sigmas().last().unwrap(), 0.0);
        // A key absent from the file, assigned in code, is used.
        cfg.timestep_spacing = Some(TimestepSpacing::Leading);
        let e = Euler::new(&cfg, 10).unwrap();
        assert_eq!(e.timesteps()[0], 900.0);
        let s = e.sigmas()[0] as f32;
        assert_eq!(e.init_noise_sigma(), f64::from((s * s + 1.0).sqrt()));
    }

    #[test]
    fn options_default_to_diffusers_and_round_trip() {
        let empty = SchedulerConfig::default();
        assert_eq!(
            EulerOptions::from_config(&empty).unwrap(),
            EulerOptions::default()
        );
        let options = EulerOptions {
            sigma_spacing: SigmaSpacing::Exponential,
            sigma_min: Some(0.1),
            sigma_max: Some(20.0),
            final_sigmas_type: FinalSigmas::SigmaMin,
            timestep_type: TimestepType::Continuous,
            interpolation_type: InterpolationType::Linear,
        };
        let mut cfg = SchedulerConfig::default();
        options.write_to(&mut cfg);
        let cfg = SchedulerConfig::from_json_str(&cfg.to_json_string()).unwrap();
        assert_eq!(EulerOptions::from_config(&cfg).unwrap(), options);
        let bad =
            SchedulerConfig::from_json_str(r#"{"interpolation_type": "log_linear"}"#).unwrap();
        let e = EulerOptions::from_config(&bad).unwrap_err().to_string();
        assert!(
            e.contains("interpolation_type") && e.contains("linear"),
            "{e}"
        );
        // Built from options or from the config they were written to: the same solver.
        let a = Euler::with_options(&empty, 12, options).unwrap();
        let b = Euler::new(&cfg, 12).unwrap();
        assert_eq!((a.timesteps(), a.sigmas()), (b.timesteps(), b.sigmas()));
    }
}
