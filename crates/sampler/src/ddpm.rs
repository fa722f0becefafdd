//! Ancestral DDPM sampling (Ho et al. 2020), diffusers' `DDPMScheduler`.
//!
//! With a = alpha_bar_t and a' = alpha_bar at the next timestep of the list
//! (1 after the last), alpha = a / a', beta = 1 - alpha:
//!
//! x_{t'} = sqrt(a') beta / (1 - a) x̂_0 + sqrt(alpha) (1 - a') / (1 - a) x_t + σ z,
//!
//! no noise at t = 0, and σ² by `variance_type`: `fixed_small` (the
//! posterior variance beta~ = (1 - a') / (1 - a) beta, floored at 1e-20),
//! `fixed_small_log` (the same through its log), `fixed_large` (beta),
//! `learned` (the model's variance channels), `learned_range` (Nichol &
//! Dhariwal 2021: exp of the model's interpolation between log beta~ and
//! log beta). `fixed_large_log` is taken as `fixed_large` (diffusers takes
//! the square root of a log there, which is not a variance).
//!
//! Config keys: those of DDIM without `set_alpha_to_one`, plus
//! `variance_type` (default `fixed_small`).

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig, VarianceType};
use tch::{Kind, Tensor};

use crate::discrete::discrete_setup;
use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
use crate::tables::Tables;
use crate::x0::X0Processing;

/// diffusers' `DDPMScheduler`.
#[derive(Debug)]
pub struct Ddpm {
    tables: Tables,
    positions: Positions,
    prediction: PredictionType,
    x0: X0Processing,
    variance: VarianceType,
}

impl Ddpm {
    /// DDPM over `steps` steps as `DDPMScheduler.from_config(config)` with
    /// `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let (tables, timesteps) = discrete_setup(config, steps)?;
        let variance = config
            .variance_type
            .flatten()
            .unwrap_or(VarianceType::FixedSmall);
        Ok(Ddpm {
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            x0: X0Processing::from_config(config, true),
            variance,
            tables,
            positions: Positions::discrete(timesteps, Kind::Int64),
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &schedule::Schedule {
        &self.tables.schedule
    }

    fn learned(&self) -> bool {
        matches!(
            self.variance,
            VarianceType::Learned | VarianceType::LearnedRange
        )
    }
}

impl Solver for Ddpm {
    fn name(&self) -> &'static str {
        "ddpm"
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn uses_predicted_variance(&self) -> bool {
        self.learned()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let idx = self.positions.indices(i, x)?;
        let channels = x.size()[1];
        let (out, predicted_variance) = if self.learned() && model_output.size()[1] == 2 * channels
        {
            (
                model_output.narrow(1, 0, channels),
                Some(model_output.narrow(1, channels, channels)),
            )
        } else {
            (model_output.shallow_clone(), None)
        };
        if self.learned() && predicted_variance.is_none() {
            return Err(Error::Shape(format!(
                "variance_type {} needs a model that outputs 2 x {channels} channels; it gave {}",
                self.variance,
                model_output.size()[1]
            )));
        }
        let ac = &self.tables.alphas_cumprod;
        let ts = self.positions.timesteps();
        let a = per(&idx, |k| ac[ts[k] as usize]);
        let a_prev = per(&idx, |k| ts.get(k + 1).map_or(1.0, |&t| ac[t as usize]));
        let x0 = predicted_x0(
            self.prediction,
            &out,
            x,
            &NoiseLevel::from_alpha_bar(&a, x)?,
        )?;
        let x0 = self.x0.apply(x0)?;
        let beta: Vec<f64> = a.iter().zip(&a_prev).map(|(a, ap)| 1.0 - a / ap).collect();
        let c_x0: Vec<f64> = (0..a.len())
            .map(|k| a_prev[k].sqrt() * beta[k] / (1.0 - a[k]))
            .collect();
        let c_x: Vec<f64> = (0..a.len())
            .map(|k| (1.0 - beta[k]).sqrt() * (1.0 - a_prev[k]) / (1.0 - a[k]))
            .collect();
        let mut prev = coef(&c_x0, x)? * &x0 + coef(&c_x, x)? * x;

        let live = per(&idx, |k| if ts[k] > 0.0 { 1.0 } else { 0.0 });
        if live.iter().any(|&m| m > 0.0) {
            let z = noise.randn(&out.size(), out.kind(), out.device())?;
            let posterior: Vec<f64> = (0..a.len())
                .map(|k| ((1.0 - a_prev[k]) / (1.0 - a[k]) * beta[k]).max(1e-20))
                .collect();
            let std = match (self.variance, &predicted_variance) {
                (VarianceType::Learned, Some(v)) => v.f_sqrt()?,
                (VarianceType::LearnedRange, Some(v)) => {
                    let min_log = coef(&posterior.iter().map(|v| v.ln()).collect::<Vec<_>>(), x)?;
                    let max_log = coef(&beta.iter().map(|b| b.ln()).collect::<Vec<_>>(), x)?;
                    let frac: Tensor = (v + 1.0) / 2.0;
                    let rest: Tensor = frac.f_neg()?.f_add_scalar(1.0)?;
                    let log_var: Tensor = &frac * max_log + rest * min_log;
                    log_var.f_mul_scalar(0.5)?.f_exp()?
                }
                (VarianceType::FixedLarge | VarianceType::FixedLargeLog, _) => {
                    coef(&beta.iter().map(|b| b.sqrt()).collect::<Vec<_>>(), x)?
                }
                (VarianceType::FixedSmallLog, _) => coef(
                    &posterior
                        .iter()
                        .map(|v| (0.5 * v.ln()).exp())
                        .collect::<Vec<_>>(),
                    x,
                )?,
                _ => coef(&posterior.iter().map(|v| v.sqrt()).collect::<Vec<_>>(), x)?,
            };
            let std = if live.iter().all(|&m| m > 0.0) {
                std
            } else {
                std * coef(&live, x)?
            };
            prev += std * z;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        let a = self.tables.alphas_cumprod[self.timesteps()[i] as usize];
        (a.sqrt(), (1.0 - a).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::TorchRng;
    use tch::Device;

    /// One ancestral step from x_t with the true x_0 known: the sample mean
    /// and variance over many draws match the posterior q(x_{t-1} | x_t, x_0).
    #[test]
    fn one_step_matches_the_posterior_statistics() {
        let cfg = SchedulerConfig {
            clip_sample: Some(false),
            ..SchedulerConfig::ddpm()
        };
        let mut s = Ddpm::new(&cfg, 1000).unwrap();
        let i = 1000 - 1 - 600; // timestep 600
        assert_eq!(s.timesteps()[i], 600.0);
        let schedule = &s.tables.schedule;
        let (c1, c2, var) = (
            schedule.value(schedule::Quantity::PosteriorMeanCoef1, 600),
            schedule.value(schedule::Quantity::PosteriorMeanCoef2, 600),
            schedule.value(schedule::Quantity::PosteriorVariance, 600),
        );
        tensor::seed::seed_everything(3);
        let n = 200_000;
        let x0 = 0.3;
        let xt = 0.7;
        let x = Tensor::full([n, 1, 1, 1], xt, (Kind::Double, Device::Cpu));
        // a model that predicts the x_0 exactly: eps = (x_t - sqrt(a) x0) / sqrt(1 - a)
        let a = s.tables.alphas_cumprod[600];
        let eps = Tensor::full(
            [n, 1, 1, 1],
            (xt - a.sqrt() * x0) / (1.0 - a).sqrt(),
            (Kind::Double, Device::Cpu),
        );
        let prev = s
            .step(&eps, i.into(), &x, &mut TorchRng)
            .unwrap()
            .prev_sample;
        let mean = prev.mean(Kind::Double).double_value(&[]);
        let v = prev.var(true).double_value(&[]);
        let expected_mean = c1 * x0 + c2 * xt;
        assert!(
            (mean - expected_mean).abs() < 4.0 * (var / n as f64).sqrt() + 1e-6,
            "{mean} vs {expected_mean}"
        );
        assert!((v / var - 1.0).abs() < 0.02, "{v} vs {var}");
    }
}
