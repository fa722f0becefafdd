//! What happens to a predicted x_0 before a solver uses it: nothing,
//! clipping, or dynamic thresholding (Saharia et al. 2022).

use schedule::SchedulerConfig;
use tch::{Kind, Tensor};

use crate::error::Result;

/// What happens to a predicted x_0 before it is used: nothing, clipping to
/// ±`range`, or dynamic thresholding (Saharia et al. 2022).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum X0Processing {
    None,
    Clip { range: f64 },
    Threshold { ratio: f64, max: f64 },
}

impl X0Processing {
    /// From `thresholding`, `dynamic_thresholding_ratio`, `sample_max_value`,
    /// `clip_sample` (default `clip_default`) and `clip_sample_range`;
    /// thresholding wins over clipping, as in diffusers.
    pub(crate) fn from_config(cfg: &SchedulerConfig, clip_default: bool) -> Self {
        match Self::threshold_only(cfg) {
            X0Processing::None if cfg.clip_sample.unwrap_or(clip_default) => X0Processing::Clip {
                range: cfg.clip_sample_range.unwrap_or(1.0),
            },
            x0 => x0,
        }
    }

    /// Clipping only (for solvers without dynamic thresholding: Heun, which
    /// does not clip by default).
    pub(crate) fn clip_only(cfg: &SchedulerConfig) -> Self {
        if cfg.clip_sample.unwrap_or(false) {
            X0Processing::Clip {
                range: cfg.clip_sample_range.unwrap_or(1.0),
            }
        } else {
            X0Processing::None
        }
    }

    /// Dynamic thresholding only (for solvers without clipping:
    /// DPM-Solver++).
    pub(crate) fn threshold_only(cfg: &SchedulerConfig) -> Self {
        if cfg.thresholding.unwrap_or(false) {
            X0Processing::Threshold {
                ratio: cfg.dynamic_thresholding_ratio.unwrap_or(0.995),
                max: cfg.sample_max_value.unwrap_or(1.0),
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

#[cfg(test)]
mod tests {
    use super::*;

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
