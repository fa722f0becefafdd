//! What the solvers share, computed as diffusers computes it: the training
//! schedule in float32 (`alphas_cumprod`, `sigmas`), the inference timestep
//! spacings, sigma conversions (Karras, exponential, sigma -> t), the
//! post-processing of predicted x_0 (clipping, dynamic thresholding) and
//! per-sample coefficient tensors.
//!
//! diffusers keeps its tables in float32 and mixes float32 tensors, numpy
//! float64 and Python floats in its formulas. The tables here are float32
//! values (held as `f64`) built with the same operations, so that timesteps
//! and sigmas match exactly and the final samples to float32 rounding.

use schedule::{BetaSchedule, Schedule, SchedulerConfig, TimestepSpacing};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::solver::StepIndex;
use crate::{Error, Result};

/// Reads a scheduler config the way diffusers' `<Scheduler>.from_config`
/// does: a key the file has wins, a key it lacks takes the solver's own
/// default.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keys<'a> {
    cfg: &'a SchedulerConfig,
}

impl<'a> Keys<'a> {
    pub fn new(cfg: &'a SchedulerConfig) -> Self {
        Keys { cfg }
    }

    /// Whether a typed key of [`SchedulerConfig`] was in the file.
    pub fn present(&self, key: &str) -> bool {
        !self.cfg.absent_keys.contains(key)
    }

    /// A typed field: its value when the file had it, else `default`.
    pub fn typed<T>(&self, key: &str, value: T, default: T) -> T {
        if self.present(key) {
            value
        } else {
            default
        }
    }

    fn extra(&self, key: &str) -> Option<&'a Value> {
        match self.cfg.extra.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.extra(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(Error::config(
                key,
                format!("expected true or false, got {v}"),
            )),
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.extra(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| Error::config(key, format!("expected a whole number, got {v}"))),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.extra(key) {
            None => Ok(None),
            Some(v) => self
                .cfg
                .extra_f64(key)
                .map(Some)
                .ok_or_else(|| Error::config(key, format!("expected a number, got {v}"))),
        }
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub fn string(&self, key: &str, default: &str) -> Result<String> {
        match self.extra(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(Error::config(key, format!("expected a string, got {v}"))),
        }
    }

    /// A string key that must be one of `valid`.
    pub fn choice(&self, key: &str, default: &str, valid: &[&str]) -> Result<String> {
        let s = self.string(key, default)?;
        if valid.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(Error::config(
                key,
                format!(
                    "{s:?} is not supported: expected one of {}",
                    valid.join(", ")
                ),
            ))
        }
    }
}

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
        eff.beta_start = beta_start;
        eff.beta_end = beta_end;
        eff.rescale_betas_zero_snr = rescale;
        let schedule = Schedule::from_config(&eff)?;
        let n = schedule.num_train_timesteps() as i64;
        let opts = (Kind::Float, Device::Cpu);
        // diffusers: torch.linspace in float32 for the linear schedules.
        let betas = match (&eff.trained_betas, eff.beta_schedule, rescale) {
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

/// numpy's `linspace(start, stop, num)` (endpoint included).
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// numpy's `arange(start, stop, step)` for floats (its length and fill rule).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let delta = (start + step) - start;
    (0..len)
        .map(|i| {
            if i == 0 {
                start
            } else {
                start + i as f64 * delta
            }
        })
        .collect()
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
                .map(|i| (i * ratio + offset) as f64)
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

/// numpy's `interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if x <= 0.0 {
        return f64::from(fp[0]);
    }
    if x >= (n - 1) as f64 {
        return f64::from(fp[n - 1]);
    }
    let j = x.floor() as usize;
    let (a, b) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    if x == j as f64 {
        return a;
    }
    (b - a) * (x - j as f64) + a
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

/// Rounds to float32, as diffusers' tables are stored.
pub(crate) fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}

/// What happens to a predicted x_0 before it is used: nothing, clipping to
/// ±`range`, or dynamic thresholding (Saharia et al. 2022).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum X0Processing {
    None,
    Clip { range: f64 },
    Threshold { ratio: f64, max: f64 },
}

impl X0Processing {
    /// Thresholding wins over clipping, as in diffusers.
    pub(crate) fn from_keys(keys: Keys<'_>, cfg: &SchedulerConfig, clip_default: bool) -> Self {
        if keys.typed("thresholding", cfg.thresholding, false) {
            X0Processing::Threshold {
                ratio: keys.typed(
                    "dynamic_thresholding_ratio",
                    cfg.dynamic_thresholding_ratio,
                    0.995,
                ),
                max: keys.typed("sample_max_value", cfg.sample_max_value, 1.0),
            }
        } else if keys.typed("clip_sample", cfg.clip_sample, clip_default) {
            X0Processing::Clip {
                range: keys.typed("clip_sample_range", cfg.clip_sample_range, 1.0),
            }
        } else {
            X0Processing::None
        }
    }

    pub(crate) fn apply(&self, x0: Tensor) -> Result<Tensor> {
        Ok(match *self {
            X0Processing::None => x0,
            X0Processing::Clip { range } => x0.f_clamp(-range, range)?,
            X0Processing::Threshold { ratio, max } => threshold_sample(&x0, ratio, max)?,
        })
    }
}

/// Dynamic thresholding: per sample, s = the `ratio` quantile of |x_0|,
/// clamped to [1, `max`]; x_0 is clamped to [-s, s] and divided by s.
pub fn threshold_sample(x0: &Tensor, ratio: f64, max: f64) -> Result<Tensor> {
    let kind = x0.kind();
    let size = x0.size();
    let x = if matches!(kind, Kind::Float | Kind::Double) {
        x0.shallow_clone()
    } else {
        x0.f_to_kind(Kind::Float)?
    };
    let flat = x.f_reshape([size[0], -1])?;
    let s = flat
        .f_abs()?
        .f_quantile_scalar(ratio, 1, false, "linear")?
        .f_clamp(1.0, max)?
        .f_unsqueeze(1)?;
    let neg = s.f_neg()?;
    let out = flat.f_clamp_tensor(Some(&neg), Some(&s))?.f_div(&s)?;
    Ok(out.f_reshape(size.as_slice())?.f_to_kind(kind)?)
}

/// A per-sample coefficient as a tensor of shape `[len, 1, ..]` that
/// broadcasts against `like` (`len` is 1 or the batch size).
pub(crate) fn coef(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![values.len() as i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    Ok(Tensor::from_slice(values)
        .f_to_kind(like.kind())?
        .f_to_device(like.device())?
        .f_reshape(shape)?)
}

/// The positions in a solver's timestep list of a batch: one for all, or
/// one per sample; each checked against `len`.
pub(crate) fn indices(step: StepIndex<'_>, batch: i64, len: usize) -> Result<Vec<usize>> {
    let v = match step {
        StepIndex::Batch(i) => vec![i],
        StepIndex::PerSample(v) => {
            if v.len() as i64 != batch {
                return Err(Error::Step(format!(
                    "{} per-sample step indices for a batch of {batch}",
                    v.len()
                )));
            }
            v.to_vec()
        }
    };
    if let Some(bad) = v.iter().find(|&&i| i >= len) {
        return Err(Error::Step(format!(
            "step index {bad} is out of range: the solver has {len} timesteps"
        )));
    }
    Ok(v)
}

/// `f` applied to every index.
pub(crate) fn per<F: Fn(usize) -> f64>(idx: &[usize], f: F) -> Vec<f64> {
    idx.iter().map(|&i| f(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_linspace_and_arange() {
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
        assert_eq!(np_linspace(0.0, 10.0, 3), vec![0.0, 5.0, 10.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(np_arange(1000.0, 0.0, -1000.0 / 3.0).len(), 3);
    }

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

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let s: Vec<f32> = (1..=10).map(|i| i as f32).collect();
        let log: Vec<f32> = s.iter().map(|x| x.ln()).collect();
        assert!((sigma_to_t(3.0, &log) - 2.0).abs() < 1e-6);
        assert_eq!(sigma_to_t(100.0, &log), 9.0);
        assert_eq!(sigma_to_t(0.1, &log), 0.0);
        assert!((interp(2.5, &s) - 3.5).abs() < 1e-12);
    }

    #[test]
    fn thresholding_clamps_per_sample() {
        let x = Tensor::from_slice(&[0.5f32, -3.0, 2.0, 0.1, 0.2, 0.3, -0.4, 0.5]).reshape([2, 4]);
        let y = threshold_sample(&x, 1.0, 2.0).unwrap();
        // sample 0: s = min(max|x|, 2) = 2 -> clamp to [-2, 2], divide by 2
        let v: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
        assert_eq!(&v[..4], &[0.25, -1.0, 1.0, 0.05]);
        // sample 1: s = max(0.5, 1) = 1 -> unchanged
        assert_eq!(&v[4..], &[0.2, 0.3, -0.4, 0.5]);
    }
}
