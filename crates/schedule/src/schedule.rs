//! [`Schedule`]: a beta schedule and every quantity derived from it, as f64
//! vectors indexed by the training timestep t = 0..T-1.
//!
//! With alpha_t = 1 - beta_t and alpha_bar_t = alpha_0 · ... · alpha_t, the
//! forward process is x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) ε,
//! its signal-to-noise ratio SNR_t = alpha_bar_t / (1 - alpha_bar_t), and the
//! posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 6-7) has mean
//! coef1_t x_0 + coef2_t x_t and variance beta~_t, with alpha_bar_{-1} = 1.
//!
//! The vectors live behind an `Arc`, so a clone is a pointer copy; tensor
//! views are made on demand on any device and kind.
//!
//! Edge values, all as IEEE arithmetic gives them: with zero terminal SNR
//! the last alpha_bar is 0, so its SNR is 0, its log-SNR is -inf and
//! 1/sqrt(alpha_bar) is +inf; a schedule whose first beta is 0 (possible with
//! trained betas) has alpha_bar_0 = 1, SNR +inf, and there the posterior
//! variance is 0 and the posterior mean is x_0 (coef1 = 1, coef2 = 0).

use std::fmt;
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::batch::same_shape;
use crate::betas::{self, cumprod, BetaSchedule};
use crate::config::{SchedulerConfig, VarianceType};
use crate::error::{Error, Result};
use crate::prediction::{self, NoiseLevel, PredictionType};

string_enum! {
    /// A per-timestep quantity of a [`Schedule`], named as diffusers and the
    /// DDPM reference code name their arrays.
    pub enum Quantity as "quantity" {
        /// beta_t, the variance of the noise added at step t.
        Betas = "betas",
        /// alpha_t = 1 - beta_t.
        Alphas = "alphas",
        /// alpha_bar_t = alpha_0 · ... · alpha_t, the signal kept at step t.
        AlphasCumprod = "alphas_cumprod",
        /// alpha_bar_{t-1}, with alpha_bar_{-1} = 1.
        AlphasCumprodPrev = "alphas_cumprod_prev",
        /// sqrt(alpha_bar_t), the factor on x_0 in x_t.
        SqrtAlphasCumprod = "sqrt_alphas_cumprod",
        /// sqrt(1 - alpha_bar_t), the factor on the noise in x_t.
        SqrtOneMinusAlphasCumprod = "sqrt_one_minus_alphas_cumprod",
        /// 1 / sqrt(alpha_bar_t).
        SqrtRecipAlphasCumprod = "sqrt_recip_alphas_cumprod",
        /// sqrt(1 / alpha_bar_t - 1).
        SqrtRecipm1AlphasCumprod = "sqrt_recipm1_alphas_cumprod",
        /// SNR_t = alpha_bar_t / (1 - alpha_bar_t).
        Snr = "snr",
        /// ln SNR_t.
        LogSnr = "log_snr",
        /// beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the
        /// posterior variance ("fixed small"); 0 at t = 0.
        PosteriorVariance = "posterior_variance",
        /// ln beta~_t with t = 0 taking beta~_1 instead of 0 (improved DDPM's
        /// `posterior_log_variance_clipped`).
        PosteriorLogVarianceClipped = "posterior_log_variance_clipped",
        /// beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t), the posterior
        /// mean's factor on x_0.
        PosteriorMeanCoef1 = "posterior_mean_coef1",
        /// (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t), the
        /// posterior mean's factor on x_t.
        PosteriorMeanCoef2 = "posterior_mean_coef2",
    }
}

impl Quantity {
    fn index(self) -> usize {
        self as usize
    }
}

/// A noise schedule over `T` training timesteps with every derived quantity.
/// Cloning is cheap (the vectors are shared).
#[derive(Clone)]
pub struct Schedule {
    tables: Arc<[Vec<f64>]>,
}

/// One row of the schedule table that `lmzh schedule` prints.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Row {
    pub t: usize,
    pub beta: f64,
    pub alpha_bar: f64,
    pub snr: f64,
    pub log_snr: f64,
}

impl Schedule {
    /// A named schedule over `num_train_timesteps` steps (see [`betas`]).
    pub fn new(
        schedule: BetaSchedule,
        num_train_timesteps: usize,
        beta_start: f64,
        beta_end: f64,
    ) -> Result<Self> {
        Self::from_betas(betas::compute(
            schedule,
            num_train_timesteps,
            beta_start,
            beta_end,
        )?)
    }

    /// The schedule a diffusers config describes: `trained_betas` when given,
    /// else `beta_schedule` with `beta_start`/`beta_end`, then zero terminal
    /// SNR when `rescale_betas_zero_snr` is set (diffusers' order).
    ///
    /// Absent keys take the defaults of diffusers' `DDPMScheduler`: 1000
    /// timesteps, `linear` betas from 0.0001 to 0.02, no rescaling.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let n = config.num_train_timesteps.unwrap_or(1000);
        let betas = match config.given_betas() {
            Some(trained) => {
                if trained.len() != n {
                    return Err(Error::TrainedBetasLength {
                        len: trained.len(),
                        expected: n,
                    });
                }
                betas::check_betas(trained)?;
                trained.to_vec()
            }
            None => betas::compute(
                config.beta_schedule.unwrap_or(BetaSchedule::Linear),
                n,
                config.beta_start.unwrap_or(0.0001),
                config.beta_end.unwrap_or(0.02),
            )?,
        };
        let betas = if config.rescale_betas_zero_snr.unwrap_or(false) {
            betas::rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        Self::from_betas(betas)
    }

    /// The same betas rescaled to zero terminal SNR (Lin et al. 2023).
    pub fn rescaled_zero_terminal_snr(&self) -> Result<Self> {
        Self::from_betas(betas::rescale_zero_terminal_snr(self.betas()))
    }

    /// A schedule from its betas: at least two, each finite and in [0, 1].
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        betas::check_betas(&betas)?;
        let n = betas.len();
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let ab = cumprod(alphas.iter().copied());
        let ab_prev: Vec<f64> = std::iter::once(1.0)
            .chain(ab[..n - 1].iter().copied())
            .collect();
        let map = |f: &dyn Fn(usize) -> f64| (0..n).map(f).collect::<Vec<f64>>();

        let posterior_variance = map(&|t| {
            let denom = 1.0 - ab[t];
            if denom == 0.0 {
                0.0
            } else {
                betas[t] * (1.0 - ab_prev[t]) / denom
            }
        });
        let mut tables: Vec<Vec<f64>> = vec![Vec::new(); Quantity::ALL.len()];
        let mut set = |q: Quantity, v: Vec<f64>| tables[q.index()] = v;
        set(Quantity::SqrtAlphasCumprod, map(&|t| ab[t].sqrt()));
        set(
            Quantity::SqrtOneMinusAlphasCumprod,
            map(&|t| (1.0 - ab[t]).sqrt()),
        );
        set(
            Quantity::SqrtRecipAlphasCumprod,
            map(&|t| ab[t].sqrt().recip()),
        );
        set(
            Quantity::SqrtRecipm1AlphasCumprod,
            map(&|t| (ab[t].recip() - 1.0).sqrt()),
        );
        set(Quantity::Snr, map(&|t| ab[t] / (1.0 - ab[t])));
        set(Quantity::LogSnr, map(&|t| ab[t].ln() - (-ab[t]).ln_1p()));
        set(
            Quantity::PosteriorLogVarianceClipped,
            map(&|t| posterior_variance[if t == 0 { 1 } else { t }].ln()),
        );
        set(
            Quantity::PosteriorMeanCoef1,
            map(&|t| {
                let denom = 1.0 - ab[t];
                if denom == 0.0 {
                    1.0
                } else {
                    betas[t] * ab_prev[t].sqrt() / denom
                }
            }),
        );
        set(
            Quantity::PosteriorMeanCoef2,
            map(&|t| {
                let denom = 1.0 - ab[t];
                if denom == 0.0 {
                    0.0
                } else {
                    (1.0 - ab_prev[t]) * alphas[t].sqrt() / denom
                }
            }),
        );
        set(Quantity::PosteriorVariance, posterior_variance);
        set(Quantity::AlphasCumprodPrev, ab_prev);
        set(Quantity::AlphasCumprod, ab);
        set(Quantity::Alphas, alphas);
        set(Quantity::Betas, betas);
        debug_assert!(tables.iter().all(|v| v.len() == n));
        Ok(Schedule {
            tables: tables.into(),
        })
    }

    /// T, the number of training timesteps.
    pub fn num_train_timesteps(&self) -> usize {
        self.betas().len()
    }

    /// One quantity for every timestep.
    pub fn get(&self, quantity: Quantity) -> &[f64] {
        &self.tables[quantity.index()]
    }

    /// One quantity at timestep `t` (panics when `t >= T`).
    pub fn value(&self, quantity: Quantity, t: usize) -> f64 {
        self.get(quantity)[t]
    }

    /// beta_t for every t.
    pub fn betas(&self) -> &[f64] {
        self.get(Quantity::Betas)
    }

    /// alpha_t = 1 - beta_t for every t.
    pub fn alphas(&self) -> &[f64] {
        self.get(Quantity::Alphas)
    }

    /// alpha_bar_t for every t.
    pub fn alphas_cumprod(&self) -> &[f64] {
        self.get(Quantity::AlphasCumprod)
    }

    /// SNR_t for every t.
    pub fn snr(&self) -> &[f64] {
        self.get(Quantity::Snr)
    }

    /// ln SNR_t for every t.
    pub fn log_snr(&self) -> &[f64] {
        self.get(Quantity::LogSnr)
    }

    /// alpha_bar_t (panics when `t >= T`).
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod()[t]
    }

    /// alpha_bar_t for a solver's "previous" timestep, which is 1 (no noise)
    /// for t < 0, as diffusers' DDPM and DDIM steps take it.
    pub fn alpha_bar_or_one(&self, t: i64) -> f64 {
        usize::try_from(t).map_or(1.0, |t| self.alpha_bar(t))
    }

    /// The fixed (not learned) variance of the reverse step t -> t-1 for a
    /// diffusers `variance_type`, as a variance: beta~_t (floored at 1e-20
    /// like diffusers) for the `fixed_small` types, beta_t for the
    /// `fixed_large` types, `None` for the learned ones.
    pub fn fixed_variance(&self, variance_type: VarianceType, t: usize) -> Option<f64> {
        match variance_type {
            VarianceType::FixedSmall | VarianceType::FixedSmallLog => {
                Some(self.value(Quantity::PosteriorVariance, t).max(1e-20))
            }
            VarianceType::FixedLarge | VarianceType::FixedLargeLog => Some(self.betas()[t]),
            VarianceType::Learned | VarianceType::LearnedRange => None,
        }
    }

    /// The table row of timestep `t` (panics when `t >= T`).
    pub fn row(&self, t: usize) -> Row {
        Row {
            t,
            beta: self.betas()[t],
            alpha_bar: self.alpha_bar(t),
            snr: self.snr()[t],
            log_snr: self.log_snr()[t],
        }
    }

    /// A 1-D tensor `[T]` of one quantity, on `device`, of `kind` (computed
    /// in f64 and rounded once).
    pub fn tensor(&self, quantity: Quantity, device: Device, kind: Kind) -> Tensor {
        Tensor::from_slice(self.get(quantity))
            .to_device(device)
            .to_kind(kind)
    }
}

impl Schedule {
    /// Converts a model output of type `from` at (`x_t`, `t`) into type `to`
    /// (see [`prediction::convert`]).
    pub fn convert(
        &self,
        output: &Tensor,
        from: PredictionType,
        to: PredictionType,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        same_shape(x_t, output, "x_t", "model output")?;
        if from == to {
            return Ok(output.shallow_clone());
        }
        let level = NoiseLevel::VariancePreserving {
            alpha: self.gather(Quantity::SqrtAlphasCumprod, t, x_t)?,
            sigma: self.gather(Quantity::SqrtOneMinusAlphasCumprod, t, x_t)?,
        };
        prediction::convert(output, from, to, x_t, &level)
    }

    /// The predicted clean sample x_0.
    pub fn predicted_sample(
        &self,
        output: &Tensor,
        from: PredictionType,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        self.convert(output, from, PredictionType::Sample, x_t, t)
    }

    /// The predicted noise ε.
    pub fn predicted_epsilon(
        &self,
        output: &Tensor,
        from: PredictionType,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        self.convert(output, from, PredictionType::Epsilon, x_t, t)
    }

    /// The training target for a model of type `prediction` that sees
    /// `add_noise(x0, noise, t)`: `noise`, `x0`, or the velocity.
    pub fn target(
        &self,
        prediction: PredictionType,
        x0: &Tensor,
        noise: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        same_shape(x0, noise, "x0", "noise")?;
        Ok(match prediction {
            PredictionType::Epsilon => noise.shallow_clone(),
            PredictionType::Sample => x0.shallow_clone(),
            PredictionType::VPrediction => self.velocity(x0, noise, t)?,
        })
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ab = self.alphas_cumprod();
        f.debug_struct("Schedule")
            .field("num_train_timesteps", &ab.len())
            .field("beta_first", &self.betas()[0])
            .field("beta_last", &self.betas()[ab.len() - 1])
            .field("alpha_bar_last", &ab[ab.len() - 1])
            .finish()
    }
}

impl PartialEq for Schedule {
    /// Equal betas (everything else follows from them).
    fn eq(&self, other: &Self) -> bool {
        self.betas() == other.betas()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear() -> Schedule {
        Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap()
    }

    #[test]
    fn derived_quantities_agree() {
        let s = linear();
        for t in [0, 1, 500, 999] {
            let ab = s.alpha_bar(t);
            assert!((s.value(Quantity::SqrtAlphasCumprod, t).powi(2) - ab).abs() < 1e-15);
            let s1 = s.value(Quantity::SqrtOneMinusAlphasCumprod, t);
            assert!((s1 * s1 + ab - 1.0).abs() < 1e-15);
            assert!((s.snr()[t].ln() - s.log_snr()[t]).abs() < 1e-12);
            assert!((s.value(Quantity::SqrtRecipAlphasCumprod, t) * ab.sqrt() - 1.0).abs() < 1e-14);
            let prev = s.alpha_bar_or_one(t as i64 - 1);
            assert_eq!(s.value(Quantity::AlphasCumprodPrev, t), prev);
            // The posterior mean reproduces x_0 when x_t carries no noise
            // scaled to x_0: coef1 + coef2 sqrt(alpha_bar_t) = sqrt(alpha_bar_{t-1}).
            let c1 = s.value(Quantity::PosteriorMeanCoef1, t);
            let c2 = s.value(Quantity::PosteriorMeanCoef2, t);
            assert!((c1 + c2 * ab.sqrt() - prev.sqrt()).abs() < 1e-12, "t={t}");
        }
        assert_eq!(s.value(Quantity::PosteriorVariance, 0), 0.0);
        assert_eq!(
            s.value(Quantity::PosteriorLogVarianceClipped, 0),
            s.value(Quantity::PosteriorVariance, 1).ln()
        );
        assert_eq!(s.alpha_bar_or_one(-1), 1.0);
        assert_eq!(s.fixed_variance(VarianceType::FixedSmall, 0), Some(1e-20));
        assert_eq!(
            s.fixed_variance(VarianceType::FixedLarge, 3),
            Some(s.betas()[3])
        );
        assert_eq!(s.fixed_variance(VarianceType::Learned, 3), None);
    }

    #[test]
    fn zero_terminal_snr_edges() {
        let s = linear().rescaled_zero_terminal_snr().unwrap();
        assert_eq!(s.alpha_bar(999), 0.0);
        assert_eq!(s.betas()[999], 1.0);
        assert_eq!(s.snr()[999], 0.0);
        assert_eq!(s.log_snr()[999], f64::NEG_INFINITY);
        assert!(s
            .get(Quantity::PosteriorVariance)
            .iter()
            .all(|v| v.is_finite()));
    }

    #[test]
    fn trained_betas_with_a_zero_first_beta() {
        let s = Schedule::from_betas(vec![0.0, 0.1, 0.2]).unwrap();
        assert_eq!(s.alpha_bar(0), 1.0);
        assert_eq!(s.snr()[0], f64::INFINITY);
        assert_eq!(s.value(Quantity::PosteriorMeanCoef1, 0), 1.0);
        assert_eq!(s.value(Quantity::PosteriorMeanCoef2, 0), 0.0);
        assert!(Schedule::from_betas(vec![0.1]).is_err());
        assert!(Schedule::from_betas(vec![0.1, 1.5]).is_err());
    }

    #[test]
    fn config_order_and_checks() {
        let mut cfg = SchedulerConfig {
            beta_schedule: Some(BetaSchedule::SquaredcosCapV2),
            num_train_timesteps: Some(50),
            rescale_betas_zero_snr: Some(true),
            ..Default::default()
        };
        let s = Schedule::from_config(&cfg).unwrap();
        let direct = Schedule::new(BetaSchedule::SquaredcosCapV2, 50, 0.0, 0.0)
            .unwrap()
            .rescaled_zero_terminal_snr()
            .unwrap();
        assert_eq!(s, direct);
        cfg.trained_betas = Some(Some(vec![0.1; 49]));
        let e = Schedule::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("49 values") && e.contains("50"), "{e}");
    }

    #[test]
    fn tensors_on_any_kind_and_clones_share() {
        let s = linear();
        let t = s.tensor(Quantity::AlphasCumprod, Device::Cpu, Kind::Float);
        assert_eq!(t.size(), [1000]);
        assert_eq!(t.kind(), Kind::Float);
        let back = t.double_value(&[999]);
        assert!((back - s.alpha_bar(999)).abs() < 1e-9);
        let c = s.clone();
        assert!(std::ptr::eq(c.betas().as_ptr(), s.betas().as_ptr()));
    }

    #[test]
    fn the_true_values_convert_into_each_other() {
        let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let opts = (Kind::Double, Device::Cpu);
        tch::manual_seed(0);
        let x0 = Tensor::randn([4, 3, 5], opts);
        let eps = Tensor::randn([4, 3, 5], opts);
        let t = Tensor::from_slice(&[0i64, 10, 500, 999]);
        let xt = s.add_noise(&x0, &eps, &t).unwrap();
        let v = s.velocity(&x0, &eps, &t).unwrap();
        let truth = |p| match p {
            PredictionType::Epsilon => &eps,
            PredictionType::Sample => &x0,
            PredictionType::VPrediction => &v,
        };
        for &from in PredictionType::ALL {
            for &to in PredictionType::ALL {
                let got = s.convert(truth(from), from, to, &xt, &t).unwrap();
                let err = (got - truth(to)).abs().max().double_value(&[]);
                assert!(err < 1e-9, "{from} -> {to}: {err}");
            }
            assert_eq!(
                s.target(from, &x0, &eps, &t).unwrap(),
                truth(from).shallow_clone()
            );
        }
        assert_eq!(
            "v".parse::<PredictionType>().unwrap(),
            PredictionType::VPrediction
        );
    }
}
