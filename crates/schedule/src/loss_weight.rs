//! Per-timestep weights of the training loss.
//!
//! - `uniform`: every timestep weighs 1 (Ho et al. 2020's "simple" loss).
//! - `min_snr` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
//!   Weighting Strategy"): the loss on x_0 is weighted by min(SNR_t, γ),
//!   which caps the weight of the nearly clean timesteps. Expressed for the
//!   target a model actually regresses:
//!   - `sample`: min(SNR, γ);
//!   - `epsilon`: min(SNR, γ) / SNR;
//!   - `v_prediction`: min(SNR, γ) / (SNR + 1).
//!
//! At SNR = 0 (the last step of a zero-terminal-SNR schedule) the epsilon
//! weight takes its limit 1 instead of 0/0; at SNR = +inf (alpha_bar = 1)
//! the epsilon and v weights take their limit 0.

use std::fmt;
use std::str::FromStr;

use tch::{Kind, Tensor};

use crate::prediction::PredictionType;
use crate::schedule::Schedule;
use crate::{Error, Result};

/// The γ that Hang et al. (2023) recommend.
pub const DEFAULT_MIN_SNR_GAMMA: f64 = 5.0;

/// How the loss of each timestep is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// Weight 1 everywhere.
    #[default]
    Uniform,
    /// min(SNR, γ), expressed for the prediction type.
    MinSnr { gamma: f64 },
}

impl LossWeighting {
    /// The weight at signal-to-noise ratio `snr` for a model that predicts
    /// `prediction`.
    pub fn weight(self, snr: f64, prediction: PredictionType) -> f64 {
        match self {
            LossWeighting::Uniform => 1.0,
            LossWeighting::MinSnr { gamma } => {
                let capped = snr.min(gamma);
                match prediction {
                    PredictionType::Sample => capped,
                    PredictionType::Epsilon if snr == 0.0 => 1.0,
                    PredictionType::Epsilon if snr.is_infinite() => 0.0,
                    PredictionType::Epsilon => capped / snr,
                    PredictionType::VPrediction if snr.is_infinite() => 0.0,
                    PredictionType::VPrediction => capped / (snr + 1.0),
                }
            }
        }
    }

    /// The weight of every timestep of `schedule`.
    pub fn table(self, schedule: &Schedule, prediction: PredictionType) -> Vec<f64> {
        schedule
            .snr()
            .iter()
            .map(|&snr| self.weight(snr, prediction))
            .collect()
    }

    /// The weights `[N]` for a batch of timesteps `t` (`[N]`, integer), of
    /// `kind`, on `t`'s device.
    pub fn weights(
        self,
        schedule: &Schedule,
        prediction: PredictionType,
        t: &Tensor,
        kind: Kind,
    ) -> Result<Tensor> {
        let t = schedule.check_timesteps(t, t.device())?;
        Ok(Tensor::from_slice(&self.table(schedule, prediction))
            .to_device(t.device())
            .index_select(0, &t)
            .to_kind(kind))
    }
}

impl FromStr for LossWeighting {
    type Err = Error;

    /// `uniform`, `min_snr` (γ = 5) or `min_snr:GAMMA`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || Error::UnknownName {
            what: "loss weighting",
            name: s.to_string(),
            valid: "uniform, min_snr, min_snr:GAMMA (GAMMA > 0)".to_string(),
        };
        match s.split_once(':') {
            None if s == "uniform" => Ok(LossWeighting::Uniform),
            None if s == "min_snr" => Ok(LossWeighting::MinSnr {
                gamma: DEFAULT_MIN_SNR_GAMMA,
            }),
            Some(("min_snr", g)) => match g.trim().parse::<f64>() {
                Ok(gamma) if gamma > 0.0 && gamma.is_finite() => {
                    Ok(LossWeighting::MinSnr { gamma })
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for LossWeighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LossWeighting::Uniform => f.write_str("uniform"),
            LossWeighting::MinSnr { gamma } => write!(f, "min_snr:{gamma}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;

    #[test]
    fn min_snr_matches_the_paper() {
        let w = LossWeighting::MinSnr { gamma: 5.0 };
        // High SNR: capped at gamma.
        assert_eq!(w.weight(100.0, PredictionType::Sample), 5.0);
        assert_eq!(w.weight(100.0, PredictionType::Epsilon), 0.05);
        assert!((w.weight(100.0, PredictionType::VPrediction) - 5.0 / 101.0).abs() < 1e-15);
        // Low SNR: the plain losses.
        assert_eq!(w.weight(0.5, PredictionType::Sample), 0.5);
        assert_eq!(w.weight(0.5, PredictionType::Epsilon), 1.0);
        assert!((w.weight(0.5, PredictionType::VPrediction) - 0.5 / 1.5).abs() < 1e-15);
        // Limits.
        assert_eq!(w.weight(0.0, PredictionType::Epsilon), 1.0);
        assert_eq!(w.weight(0.0, PredictionType::VPrediction), 0.0);
        assert_eq!(w.weight(f64::INFINITY, PredictionType::Epsilon), 0.0);
        assert_eq!(w.weight(f64::INFINITY, PredictionType::VPrediction), 0.0);
        assert_eq!(w.weight(f64::INFINITY, PredictionType::Sample), 5.0);
        assert_eq!(
            LossWeighting::Uniform.weight(3.0, PredictionType::Epsilon),
            1.0
        );
    }

    #[test]
    fn batch_weights_and_names() {
        let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let w = "min_snr:5".parse::<LossWeighting>().unwrap();
        let t = Tensor::from_slice(&[0i64, 999]);
        let got = w
            .weights(&s, PredictionType::Epsilon, &t, Kind::Float)
            .unwrap();
        assert_eq!(got.size(), [2]);
        assert!((got.double_value(&[0]) - 5.0 / s.snr()[0]).abs() < 1e-6);
        assert_eq!(got.double_value(&[1]), 1.0);
        assert!(w
            .weights(
                &s,
                PredictionType::Epsilon,
                &Tensor::from_slice(&[1000i64]),
                Kind::Float
            )
            .is_err());
        assert_eq!(w.to_string(), "min_snr:5");
        assert_eq!(
            "min_snr".parse::<LossWeighting>().unwrap(),
            LossWeighting::MinSnr { gamma: 5.0 }
        );
        assert!("min_snr:-1".parse::<LossWeighting>().is_err());
    }
}
