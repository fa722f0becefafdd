//! What the sigma-space solvers (Euler, Euler ancestral, Heun; DPM-Solver++
//! for its noise levels) share: the state x = x_0 + sigma ε with sigma_t =
//! sqrt((1 - alpha_bar_t) / alpha_bar_t), the model input x / sqrt(sigma² +
//! 1), the noise-level spacings (interpolated, Karras, exponential) and the
//! set-up from a scheduler config.

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig, TimestepSpacing};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::extra::{set_bool, set_str, Extra};
use crate::numpy::{f32r, interp, np_linspace};
use crate::solver::{coef, per, Positions, StepIndex};
use crate::tables::{check_steps, check_timesteps, spaced_timesteps, Tables};
use crate::x0::X0Processing;

/// How a sigma-space solver spreads its noise levels (diffusers'
/// `use_karras_sigmas` and `use_exponential_sigmas`; `use_beta_sigmas` is
/// not supported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigmaSpacing {
    /// Interpolated from the training table at the timesteps (both keys
    /// false, diffusers' default).
    #[default]
    Timesteps,
    /// Karras et al. (2022): evenly spaced in sigma^(1/7).
    Karras,
    /// Evenly spaced in log sigma.
    Exponential,
}

impl SigmaSpacing {
    /// From `use_karras_sigmas`, `use_exponential_sigmas` and
    /// `use_beta_sigmas` (at most one of them true).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        if extra.bool("use_beta_sigmas", false)? {
            return Err(Error::config(
                "use_beta_sigmas",
                "beta sigmas are not supported",
            ));
        }
        let karras = extra.bool("use_karras_sigmas", false)?;
        let exponential = extra.bool("use_exponential_sigmas", false)?;
        Ok(match (karras, exponential) {
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

    /// Sets `use_karras_sigmas` and `use_exponential_sigmas`.
    pub fn write_to(self, config: &mut SchedulerConfig) {
        set_bool(config, "use_karras_sigmas", self == SigmaSpacing::Karras);
        set_bool(
            config,
            "use_exponential_sigmas",
            self == SigmaSpacing::Exponential,
        );
    }

    /// This spacing with `use_karras_sigmas` overridden: `Some(true)` gives
    /// Karras sigmas, `Some(false)` turns them off (exponential sigmas stay).
    pub fn with_karras(self, karras: Option<bool>) -> Self {
        match (karras, self) {
            (Some(true), _) => SigmaSpacing::Karras,
            (Some(false), SigmaSpacing::Karras) => SigmaSpacing::Timesteps,
            _ => self,
        }
    }
}

/// The noise level after the last step (diffusers' `final_sigmas_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FinalSigmas {
    /// 0: the last step ends at the clean sample (the default).
    #[default]
    Zero,
    /// The training table's smallest sigma.
    SigmaMin,
}

impl FinalSigmas {
    /// From `final_sigmas_type` (`zero` or `sigma_min`).
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        Ok(
            match extra
                .choice("final_sigmas_type", "zero", &["zero", "sigma_min"])?
                .as_str()
            {
                "zero" => FinalSigmas::Zero,
                _ => FinalSigmas::SigmaMin,
            },
        )
    }

    /// Sets `final_sigmas_type`.
    pub fn write_to(self, config: &mut SchedulerConfig) {
        let name = match self {
            FinalSigmas::Zero => "zero",
            FinalSigmas::SigmaMin => "sigma_min",
        };
        set_str(config, "final_sigmas_type", name);
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
fn init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0f64, f64::max) as f32;
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => f64::from(max),
        TimestepSpacing::Leading => f64::from((max * max + 1.0).sqrt()),
    }
}

/// Where a sigma-space step starts: the batch's positions, the model's x̂_0
/// (after `x0` processing) and the slope d = (x - x̂_0) / sigma of the
/// probability-flow ODE.
pub(crate) struct SigmaStart {
    pub idx: Vec<usize>,
    pub x0: Tensor,
    pub slope: Tensor,
}

impl SigmaStart {
    pub fn new(
        positions: &Positions,
        prediction: PredictionType,
        x0: &X0Processing,
        model_output: &Tensor,
        x: &Tensor,
        i: StepIndex<'_>,
    ) -> Result<Self> {
        let idx = positions.indices(i, x)?;
        let sigma = per(&idx, |k| positions.sigmas()[k]);
        let level = NoiseLevel::Sigma(sigma.clone());
        let x0 = x0.apply(predicted_x0(prediction, model_output, x, &level)?)?;
        let inv: Vec<f64> = sigma.iter().map(|s| 1.0 / s).collect();
        let slope = (x - &x0) * coef(&inv, x)?;
        Ok(SigmaStart { idx, x0, slope })
    }
}

/// What a sigma-space solver is built from.
pub(crate) struct SigmaSetup {
    pub tables: Tables,
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub spacing: TimestepSpacing,
    pub prediction: PredictionType,
}

impl SigmaSetup {
    /// The noise levels as diffusers holds them (float32), then `last`.
    pub fn sigmas_then(&self, last: f64) -> Vec<f64> {
        let mut sigmas: Vec<f64> = self.sigmas.iter().map(|&s| f32r(s)).collect();
        sigmas.push(last);
        sigmas
    }

    /// Positions at `timesteps` with the noise levels `sigmas` (one per
    /// timestep, then the final one), the initial noise scaled as diffusers
    /// scales it for this set-up's timestep spacing.
    pub fn positions(&self, timesteps: Vec<f64>, sigmas: Vec<f64>) -> Positions {
        let init = init_noise_sigma(&sigmas, self.spacing);
        Positions::sigma(timesteps, sigmas, init)
    }
}

/// The training tables of a sigma-space solver: the config's betas (the
/// solver's `beta_defaults` for absent keys), rescaled to zero terminal SNR
/// with the last alpha_bar clamped (so the last sigma is finite) when
/// `rescale`.
pub(crate) fn sigma_tables(
    config: &SchedulerConfig,
    beta_defaults: (f64, f64),
    rescale: bool,
) -> Result<Tables> {
    let mut tables = Tables::new(
        config,
        config.beta_start.unwrap_or(beta_defaults.0),
        config.beta_end.unwrap_or(beta_defaults.1),
        rescale,
    )?;
    if rescale {
        tables.clamp_zero_terminal_snr();
    }
    Ok(tables)
}

/// Builds the schedule of a sigma-space solver; `beta_defaults` are the
/// solver's diffusers defaults, `has_rescale` whether it knows
/// `rescale_betas_zero_snr`, and `sigma_range` the (`sigma_min`,
/// `sigma_max`) of Karras and exponential noise levels.
pub(crate) fn sigma_setup(
    config: &SchedulerConfig,
    steps: usize,
    beta_defaults: (f64, f64),
    has_rescale: bool,
    levels: SigmaSpacing,
    sigma_range: (Option<f64>, Option<f64>),
) -> Result<SigmaSetup> {
    let rescale = has_rescale && config.rescale_betas_zero_snr.unwrap_or(false);
    let tables = sigma_tables(config, beta_defaults, rescale)?;
    let train = tables.num_train_timesteps();
    check_steps(steps, train)?;
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
    let offset = config.steps_offset.unwrap_or(0);
    let ts = spaced_timesteps(spacing, train, steps, offset, false);
    check_timesteps(&ts, train)?;
    let (timesteps, sigmas) = sigma_schedule(&tables, ts, levels, sigma_range.0, sigma_range.1);
    Ok(SigmaSetup {
        prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
        tables,
        timesteps,
        sigmas,
        spacing,
    })
}

/// Karras et al. (2022) noise levels: `n` sigmas from `max` to `min`, evenly
/// spaced in sigma^(1/7).
pub(crate) fn karras_sigmas(min: f64, max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (min.powf(1.0 / rho), max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `n` sigmas from `max` to `min`, evenly spaced in log sigma.
pub(crate) fn exponential_sigmas(min: f64, max: f64, n: usize) -> Vec<f64> {
    np_linspace(max.ln(), min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of a noise
/// level, interpolating log sigma linearly.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // The last index whose log sigma is <= log_sigma (0 when none is).
    let mut low = 0;
    let mut count = 0;
    let mut best = 0;
    for (i, &ls) in log_sigmas.iter().enumerate() {
        if log_sigma - f64::from(ls) >= 0.0 {
            count += 1;
            if count > best {
                best = count;
                low = i;
            }
        }
    }
    let low = low.min(n - 2);
    let high = low + 1;
    let lo = f64::from(log_sigmas[low]);
    // numpy subtracts the two float32 table entries in float32.
    let span = f64::from(log_sigmas[low] - log_sigmas[high]);
    let w = ((lo - log_sigma) / span).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let s: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let log: Vec<f32> = s.iter().map(|x| x.ln()).collect();
        assert!((sigma_to_t(3.0, &log) - 2.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &log), 9.0);
        assert_eq!(sigma_to_t(0.1, &log), 0.0);
        assert!((interp(2.5, &s) - 3.5).abs() < 1e-12);
    }
}
