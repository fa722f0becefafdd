//! The training tables and inference timesteps every solver starts from,
//! computed as diffusers computes them.
//!
//! diffusers keeps its tables in float32 and mixes float32 tensors, numpy
//! float64 and Python floats in its formulas. The tables here are float32
//! values (held as `f64`) built with the same operations, so that timesteps
//! and sigmas match exactly and the final samples to float32 rounding.

use schedule::{BetaSchedule, Schedule, SchedulerConfig, TimestepSpacing};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::numpy::{np_arange, np_linspace};

/// The training schedule of a solver: the [`Schedule`] and diffusers'
/// float32 `alphas_cumprod`.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub schedule: Schedule,
    /// alpha_bar_t as diffusers holds it (float32 values).
    pub alphas_cumprod: Vec<f64>,
}

impl Tables {
    /// The schedule of `cfg` with the solver's own `beta_start`/`beta_end`
    /// defaults and zero-terminal-SNR rescaling as decided by the caller.
    pub fn new(
        cfg: &SchedulerConfig,
        beta_start: f64,
        beta_end: f64,
        rescale: bool,
    ) -> Result<Self> {
        let mut eff = cfg.clone();
        eff.beta_start = Some(beta_start);
        eff.beta_end = Some(beta_end);
        eff.rescale_betas_zero_snr = Some(rescale);
        let schedule = Schedule::from_config(&eff)?;
        let n = schedule.num_train_timesteps() as i64;
        let opts = (Kind::Float, Device::Cpu);
        // diffusers: torch.linspace in float32 for the linear schedules.
        let beta_schedule = eff.beta_schedule.unwrap_or(BetaSchedule::Linear);
        let betas = match (eff.given_betas(), beta_schedule, rescale) {
            (None, BetaSchedule::Linear, false) => Tensor::linspace(beta_start, beta_end, n, opts),
            (None, BetaSchedule::ScaledLinear, false) => {
                Tensor::linspace(beta_start.sqrt(), beta_end.sqrt(), n, opts).pow_tensor_scalar(2)
            }
            _ => Tensor::from_slice(schedule.betas()).to_kind(Kind::Float),
        };
        let alphas_cumprod = betas
            .f_neg()?
            .f_add_scalar(1.0)?
            .f_cumprod(0, Kind::Float)?;
        let alphas_cumprod: Vec<f32> = Vec::try_from(&alphas_cumprod)?;
        Ok(Tables {
            schedule,
            alphas_cumprod: alphas_cumprod.into_iter().map(f64::from).collect(),
        })
    }

    pub fn num_train_timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Sets the last alpha_bar to 2^-24 as diffusers' sigma-space solvers do
    /// with zero terminal SNR (so that the last sigma is finite).
    pub fn clamp_zero_terminal_snr(&mut self) {
        if let Some(last) = self.alphas_cumprod.last_mut() {
            *last = 2f64.powi(-24);
        }
    }

    /// sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) in float32, for every t.
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| {
                let a = a as f32;
                ((1.0 - a) / a).sqrt()
            })
            .collect()
    }
}

/// Checks the number of inference steps against the training timesteps.
pub(crate) fn check_steps(steps: usize, train: usize) -> Result<()> {
    if steps == 0 {
        return Err(Error::ZeroSteps);
    }
    if steps > train {
        return Err(Error::TooManySteps { steps, train });
    }
    Ok(())
}

/// The inference timesteps of DDPM, DDIM, Euler, Euler ancestral and Heun
/// for a spacing (diffusers' `set_timesteps`), largest first. `round`
/// rounds the `linspace` spacing to integers (DDPM, DDIM); the sigma-space
/// solvers keep fractional timesteps, in float32.
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    train: usize,
    steps: usize,
    offset: usize,
    round: bool,
) -> Vec<f64> {
    let t = train as f64;
    let mut ts: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => {
            let v = np_linspace(0.0, t - 1.0, steps);
            v.into_iter()
                .rev()
                .map(|x| {
                    if round {
                        x.round_ties_even()
                    } else {
                        f64::from(x as f32)
                    }
                })
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio).saturating_add(offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t / steps as f64;
            np_arange(t, 0.0, -ratio)
                .into_iter()
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    };
    if !round {
        for x in &mut ts {
            *x = f64::from(*x as f32);
        }
    }
    ts
}

/// Every timestep must index the training schedule (a large `steps_offset`
/// can push the first one past it).
pub(crate) fn check_timesteps(ts: &[f64], train: usize) -> Result<()> {
    if let Some(t) = ts.iter().find(|&&t| t < 0.0 || t > (train - 1) as f64) {
        return Err(Error::config(
            "steps_offset",
            format!("it makes timestep {t}, outside the {train} training timesteps"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacings_match_diffusers() {
        use TimestepSpacing::*;
        // DDIMScheduler(steps_offset=1).set_timesteps(10)
        assert_eq!(
            spaced_timesteps(Leading, 1000, 10, 1, true),
            vec![901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0]
        );
        // timestep_spacing="trailing", 10 steps
        assert_eq!(
            spaced_timesteps(Trailing, 1000, 10, 0, true),
            vec![999.0, 899.0, 799.0, 699.0, 599.0, 499.0, 399.0, 299.0, 199.0, 99.0]
        );
        // "linspace", 4 steps: 999, 666, 333, 0
        assert_eq!(
            spaced_timesteps(Linspace, 1000, 4, 0, true),
            vec![999.0, 666.0, 333.0, 0.0]
        );
        let euler = spaced_timesteps(Linspace, 1000, 50, 0, false);
        assert_eq!(euler[1], f64::from((48.0 * 999.0 / 49.0) as f32));
    }
}
