//! What happens to a predicted x_0 before a solver uses it: nothing,
//! clipping, or dynamic thresholding (Saharia et al. 2022).

use schedule::SchedulerConfig;
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::keys::Keys;

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

    /// Clipping only (for solvers without dynamic thresholding: Heun).
    pub(crate) fn from_keys_clip_only(keys: Keys<'_>, cfg: &SchedulerConfig) -> Self {
        if keys.typed("clip_sample", cfg.clip_sample, false) {
            X0Processing::Clip {
                range: keys.typed("clip_sample_range", cfg.clip_sample_range, 1.0),
            }
        } else {
            X0Processing::None
        }
    }

    /// Dynamic thresholding only (for solvers without clipping: DPM-Solver++).
    pub(crate) fn from_keys_threshold_only(keys: Keys<'_>, cfg: &SchedulerConfig) -> Self {
        if keys.typed("thresholding", cfg.thresholding, false) {
            X0Processing::Threshold {
                ratio: keys.typed(
                    "dynamic_thresholding_ratio",
                    cfg.dynamic_thresholding_ratio,
                    0.995,
                ),
                max: keys.typed("sample_max_value", cfg.sample_max_value, 1.0),
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
