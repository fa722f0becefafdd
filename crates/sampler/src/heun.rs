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

use schedule::{PredictionType, SchedulerConfig};
use tch::Tensor;

use crate::error::{Error, Result};
use crate::extra::{set_opt_f64, Extra};
use crate::noise::NoiseSource;
use crate::numpy::f32r;
use crate::sigma::{sigma_setup, SigmaSpacing, SigmaStart};
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
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
    /// 2 · steps - 1 model timesteps and 2 · steps sigmas: s0, s1, s1, s2,
    /// s2, .., s_{n-1}, s_{n-1}, 0.
    positions: Positions,
    prediction: PredictionType,
    x0: X0Processing,
    state: Option<FirstStage>,
}

/// Heun's options: its `HeunDiscreteScheduler` keys beyond
/// [`SchedulerConfig`]'s typed fields, with diffusers' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeunOptions {
    /// `use_karras_sigmas` / `use_exponential_sigmas`.
    pub sigma_spacing: SigmaSpacing,
    /// The smallest Karras or exponential sigma (default: the table's).
    pub sigma_min: Option<f64>,
    /// The largest Karras or exponential sigma (default: the table's).
    pub sigma_max: Option<f64>,
}

impl HeunOptions {
    /// The options a scheduler config sets, diffusers' defaults for the
    /// keys it lacks.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        Ok(HeunOptions {
            sigma_spacing: SigmaSpacing::from_config(config)?,
            sigma_min: extra.opt_f64("sigma_min")?,
            sigma_max: extra.opt_f64("sigma_max")?,
        })
    }

    /// Writes the config keys of these options.
    pub fn write_to(&self, config: &mut SchedulerConfig) {
        self.sigma_spacing.write_to(config);
        set_opt_f64(config, "sigma_min", self.sigma_min);
        set_opt_f64(config, "sigma_max", self.sigma_max);
    }
}

impl Heun {
    /// Heun over `steps` steps as `HeunDiscreteScheduler.from_config(config)`
    /// with `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_options(config, steps, HeunOptions::from_config(config)?)
    }

    /// Heun over `steps` steps with the schedule keys of `config` and the
    /// given options (the config's option keys are not read).
    pub fn with_options(
        config: &SchedulerConfig,
        steps: usize,
        options: HeunOptions,
    ) -> Result<Self> {
        let setup = sigma_setup(
            config,
            steps,
            (0.00085, 0.012),
            false,
            options.sigma_spacing,
            (options.sigma_min, options.sigma_max),
        )?;
        let base = setup.sigmas_then(0.0);
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
        Ok(Heun {
            positions: setup.positions(timesteps, sigmas),
            prediction: setup.prediction,
            x0: X0Processing::clip_only(config),
            state: None,
        })
    }
}

impl Solver for Heun {
    fn name(&self) -> &'static str {
        "heun"
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
        // The model saw sigmas[j] in both stages.
        let SigmaStart {
            idx,
            x0,
            slope: derivative,
            ..
        } = SigmaStart::new(
            &self.positions,
            self.prediction,
            &self.x0,
            model_output,
            x,
            i,
        )?;
        let sigmas = self.positions.sigmas();
        let first: Vec<bool> = idx.iter().map(|k| k % 2 == 0).collect();
        let all_first = first.iter().all(|&f| f);

        let dt = coef(
            &per(&idx, |k| {
                if k % 2 == 0 {
                    sigmas[k + 1] - sigmas[k]
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
        (1.0, self.positions.sigmas()[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_diffusers_and_options_round_trip() {
        let empty = SchedulerConfig::default();
        assert_eq!(
            HeunOptions::from_config(&empty).unwrap(),
            HeunOptions::default()
        );
        // HeunDiscreteScheduler's own betas (0.00085 to 0.012) when the file
        // has none; the ones assigned in code when it had none.
        let own = Heun::new(&empty, 10).unwrap();
        let mut cfg = empty.clone();
        cfg.beta_start = Some(0.00085);
        cfg.beta_end = Some(0.012);
        assert_eq!(
            own.positions.sigmas(),
            Heun::new(&cfg, 10).unwrap().positions.sigmas()
        );
        cfg.beta_start = Some(0.0001);
        cfg.beta_end = Some(0.02);
        assert_ne!(
            own.positions.sigmas(),
            Heun::new(&cfg, 10).unwrap().positions.sigmas()
        );

        let options = HeunOptions {
            sigma_spacing: SigmaSpacing::Karras,
            sigma_min: None,
            sigma_max: Some(50.0),
        };
        let mut written = SchedulerConfig::default();
        options.write_to(&mut written);
        assert_eq!(HeunOptions::from_config(&written).unwrap(), options);
        let a = Heun::with_options(&empty, 8, options).unwrap();
        let b = Heun::new(&written, 8).unwrap();
        assert_eq!(
            (a.timesteps(), a.positions.sigmas()),
            (b.timesteps(), b.positions.sigmas())
        );
    }
}
