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

use schedule::{PredictionType, SchedulerConfig, TimestepSpacing};
use tch::{Kind, Tensor};

use crate::common::{
    check_steps, coef, exponential_sigmas, f32r, indices, interp, karras_sigmas, per, sigma_to_t,
    spaced_timesteps, Keys, Tables,
};
use crate::noise::NoiseSource;
use crate::solver::{Solver, StepIndex, StepOutput};
use crate::{Error, Result};

/// diffusers' `EulerDiscreteScheduler`.
#[derive(Debug)]
pub struct Euler {
    timesteps: Vec<f64>,
    /// One per timestep plus the final one.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    init_noise_sigma: f64,
}

/// How a sigma-space solver spreads its noise levels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SigmaSpacing {
    /// Interpolated from the training table at the timesteps.
    Timesteps,
    Karras,
    Exponential,
}

impl SigmaSpacing {
    /// From `use_karras_sigmas`, `use_exponential_sigmas`, `use_beta_sigmas`
    /// and the command line's override of the first.
    pub(crate) fn from_keys(keys: Keys<'_>, karras: Option<bool>) -> Result<Self> {
        if keys.bool("use_beta_sigmas", false)? {
            return Err(Error::config(
                "use_beta_sigmas",
                "beta sigmas are not supported",
            ));
        }
        let karras_cfg = keys.bool("use_karras_sigmas", false)?;
        let exponential = keys.bool("use_exponential_sigmas", false)?;
        match karras {
            Some(true) => return Ok(SigmaSpacing::Karras),
            Some(false) if exponential => return Ok(SigmaSpacing::Exponential),
            Some(false) => return Ok(SigmaSpacing::Timesteps),
            None => {}
        }
        Ok(match (karras_cfg, exponential) {
            (true, true) => {
                return Err(Error::config(
                    "use_karras_sigmas",
                    "only one of use_karras_sigmas and use_exponential_sigmas can be set",
                ))
            }
            (true, false) => SigmaSpacing::Karras,
            (false, true) => SigmaSpacing::Exponential,
            (false, false) => SigmaSpacing::Timesteps,
        })
    }
}

/// The sigmas (without the final one) and timesteps of Euler and Heun.
pub(crate) fn sigma_schedule(
    tables: &Tables,
    timesteps: Vec<f64>,
    spacing: SigmaSpacing,
    sigma_min: Option<f64>,
    sigma_max: Option<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let full = tables.sigmas();
    let log_sigmas: Vec<f32> = full.iter().map(|s| s.ln()).collect();
    let sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t, &full)).collect();
    let n = sigmas.len();
    let (lo, hi) = (
        sigma_min.unwrap_or(sigmas[n - 1]),
        sigma_max.unwrap_or(sigmas[0]),
    );
    let sigmas = match spacing {
        SigmaSpacing::Timesteps => return (timesteps, sigmas),
        SigmaSpacing::Karras => karras_sigmas(lo, hi, n),
        SigmaSpacing::Exponential => exponential_sigmas(lo, hi, n),
    };
    let timesteps = sigmas
        .iter()
        .map(|&s| f32r(sigma_to_t(s, &log_sigmas)))
        .collect();
    (timesteps, sigmas)
}

/// diffusers' `init_noise_sigma` of the sigma-space solvers.
pub(crate) fn init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f64, f64::max) as f32;
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// x / sqrt(sigma² + 1) per sample.
pub(crate) fn scale_by_sigma(x: &Tensor, sigma: &[f64]) -> Result<Tensor> {
    let c: Vec<f64> = sigma.iter().map(|s| 1.0 / (s * s + 1.0).sqrt()).collect();
    Ok(x * coef(&c, x)?)
}

/// x̂_0 from a model output in sigma space (the model saw x / sqrt(sigma² + 1)).
pub(crate) fn sigma_x0(
    prediction: PredictionType,
    out: &Tensor,
    x: &Tensor,
    sigma: &[f64],
) -> Result<Tensor> {
    Ok(match prediction {
        PredictionType::Epsilon => x - coef(sigma, x)? * out,
        PredictionType::Sample => out.shallow_clone(),
        PredictionType::VPrediction => {
            let c_out: Vec<f64> = sigma.iter().map(|s| -s / (s * s + 1.0).sqrt()).collect();
            let c_x: Vec<f64> = sigma.iter().map(|s| 1.0 / (s * s + 1.0)).collect();
            out * coef(&c_out, x)? + x * coef(&c_x, x)?
        }
    })
}

/// The options Euler and Heun share.
pub(crate) struct SigmaSetup {
    pub tables: Tables,
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub spacing: TimestepSpacing,
    pub prediction: PredictionType,
}

/// Builds the schedule of a sigma-space solver; `beta_defaults` are the
/// solver's diffusers defaults and `has_rescale` whether it knows
/// `rescale_betas_zero_snr`.
pub(crate) fn sigma_setup(
    config: &SchedulerConfig,
    steps: usize,
    beta_defaults: (f64, f64),
    has_rescale: bool,
    spacing_kind: Option<SigmaSpacing>,
) -> Result<SigmaSetup> {
    let keys = Keys::new(config);
    let rescale = has_rescale
        && keys.typed(
            "rescale_betas_zero_snr",
            config.rescale_betas_zero_snr,
            false,
        );
    let mut tables = Tables::new(
        config,
        keys.typed("beta_start", config.beta_start, beta_defaults.0),
        keys.typed("beta_end", config.beta_end, beta_defaults.1),
        rescale,
    )?;
    if rescale {
        tables.clamp_zero_terminal_snr();
    }
    let train = tables.num_train_timesteps();
    check_steps(steps, train)?;
    let spacing = keys.typed(
        "timestep_spacing",
        config.timestep_spacing,
        TimestepSpacing::Linspace,
    );
    let offset = keys.typed("steps_offset", config.steps_offset, 0);
    let ts = spaced_timesteps(spacing, train, steps, offset, false);
    crate::ddim::check_timesteps(&ts, train)?;
    let (timesteps, sigmas) = match spacing_kind {
        Some(kind) => sigma_schedule(
            &tables,
            ts,
            kind,
            keys.opt_f64("sigma_min")?,
            keys.opt_f64("sigma_max")?,
        ),
        None => {
            let full = tables.sigmas();
            let s = ts.iter().map(|&t| interp(t, &full)).collect();
            (ts, s)
        }
    };
    Ok(SigmaSetup {
        prediction: keys.typed(
            "prediction_type",
            config.prediction_type,
            PredictionType::Epsilon,
        ),
        tables,
        timesteps,
        sigmas,
        spacing,
    })
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
        let x0 = sigma_x0(self.prediction, model_output, x, &sigma)?;
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
