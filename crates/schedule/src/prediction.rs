//! The three things a denoising model can predict from x_t and t, and the
//! conversions between them (diffusers' `prediction_type`):
//!
//! - `epsilon`: the noise ε;
//! - `sample`: the clean sample x_0;
//! - `v_prediction`: the velocity v = a ε - s x_0 (Salimans & Ho 2022),
//!
//! with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t) and
//! x_t = a x_0 + s ε. Since a² + s² = 1:
//!
//! | from \ to | x_0                 | ε                   | v                   |
//! |-----------|---------------------|---------------------|---------------------|
//! | ε         | (x_t - s ε) / a     | ε                   | (ε - s x_t) / a     |
//! | x_0       | x_0                 | (x_t - a x_0) / s   | (a x_t - x_0) / s   |
//! | v         | a x_t - s v         | s x_t + a v         | v                   |
//!
//! Conversions from v are defined at every t. From ε they divide by a, which
//! is 0 at the last step of a zero-terminal-SNR schedule (the result is then
//! inf/NaN: no sample can be recovered from pure noise and its noise); from
//! x_0 they divide by s, which is 0 where alpha_bar = 1.
//!
//! [`x0_and_eps`], [`predicted_x0`] and [`convert`] are the one place where
//! this algebra is written; [`crate::Schedule::convert`] and every solver
//! call them with the [`NoiseLevel`] of the sample in the space the solver
//! keeps it in. Each space keeps the floating-point operations of the
//! diffusers scheduler that works in it, so that results agree to the bit.

use tch::Tensor;

use crate::batch::{per_sample, same_shape};
use crate::error::Result;

string_enum! {
    /// What a model predicts (diffusers' `prediction_type`).
    pub enum PredictionType as "prediction_type" {
        /// The noise ε.
        Epsilon = "epsilon",
        /// The clean sample x_0.
        Sample = "sample",
        /// The velocity v = sqrt(alpha_bar) ε - sqrt(1 - alpha_bar) x_0.
        VPrediction = "v_prediction" | "v",
    }
}

impl Default for PredictionType {
    /// `epsilon`, diffusers' default.
    fn default() -> Self {
        PredictionType::Epsilon
    }
}

/// Where a sample is between x_0 and noise, in the space a solver keeps it.
#[derive(Debug)]
pub enum NoiseLevel {
    /// Variance preserving, x = alpha x_0 + sigma ε with alpha² + sigma² = 1
    /// (DDPM, DDIM, RePaint, [`crate::Schedule::convert`]): per-sample
    /// tensors that broadcast against x.
    VariancePreserving { alpha: Tensor, sigma: Tensor },
    /// Sigma space, x = x_0 + sigma ε, whose model input was the
    /// variance-preserving x / sqrt(sigma² + 1) (Euler, Euler ancestral,
    /// Heun): one sigma per sample, or one for the batch.
    Sigma(Vec<f64>),
    /// The variance-preserving x = alpha x_0 + alpha sigma ε with
    /// alpha = 1 / sqrt(sigma² + 1), given by its sigma-space noise level
    /// (DPM-Solver++): one sigma per sample, or one for the batch.
    VariancePreservingSigma(Vec<f64>),
}

impl NoiseLevel {
    /// The variance-preserving level of alpha_bar per sample (or one for the
    /// batch): alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), shaped
    /// and typed like `like`.
    pub fn from_alpha_bar(alpha_bar: &[f64], like: &Tensor) -> Result<Self> {
        let alpha: Vec<f64> = alpha_bar.iter().map(|a| a.sqrt()).collect();
        let sigma: Vec<f64> = alpha_bar.iter().map(|a| (1.0 - a).sqrt()).collect();
        Ok(NoiseLevel::VariancePreserving {
            alpha: per_sample(&alpha, like)?,
            sigma: per_sample(&sigma, like)?,
        })
    }
}

/// (alpha, alpha sigma): the variance-preserving coefficients on x_0 and ε of
/// a sigma-space noise level sigma, alpha = 1 / sqrt(sigma² + 1).
pub fn vp_coefficients(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// The predicted x̂_0 of a model `output` of type `prediction` for the
/// sample `x` at `level`.
pub fn predicted_x0(
    prediction: PredictionType,
    output: &Tensor,
    x: &Tensor,
    level: &NoiseLevel,
) -> Result<Tensor> {
    use PredictionType::{Epsilon, Sample, VPrediction};
    Ok(match (level, prediction) {
        (_, Sample) => output.shallow_clone(),
        (NoiseLevel::VariancePreserving { alpha, sigma }, Epsilon) => (x - sigma * output) / alpha,
        (NoiseLevel::VariancePreserving { alpha, sigma }, VPrediction) => {
            alpha * x - sigma * output
        }
        (NoiseLevel::Sigma(s), Epsilon) => x - per_sample(s, x)? * output,
        (NoiseLevel::Sigma(s), VPrediction) => {
            let c_out: Vec<f64> = s.iter().map(|s| -s / (s * s + 1.0).sqrt()).collect();
            let c_x: Vec<f64> = s.iter().map(|s| 1.0 / (s * s + 1.0)).collect();
            output * per_sample(&c_out, x)? + x * per_sample(&c_x, x)?
        }
        (NoiseLevel::VariancePreservingSigma(s), Epsilon) => {
            let (c_x, c_out): (Vec<f64>, Vec<f64>) = s
                .iter()
                .map(|&s| {
                    let (alpha, s_t) = vp_coefficients(s);
                    (1.0 / alpha, s_t / alpha)
                })
                .unzip();
            x * per_sample(&c_x, x)? - output * per_sample(&c_out, x)?
        }
        (NoiseLevel::VariancePreservingSigma(s), VPrediction) => {
            let (c_x, c_out): (Vec<f64>, Vec<f64>) = s.iter().map(|&s| vp_coefficients(s)).unzip();
            x * per_sample(&c_x, x)? - output * per_sample(&c_out, x)?
        }
    })
}

/// The predicted x̂_0 and ε̂ of a model `output` of type `prediction` for the
/// sample `x` at `level` (ε̂ unclipped, from the raw output).
pub fn x0_and_eps(
    prediction: PredictionType,
    output: &Tensor,
    x: &Tensor,
    level: &NoiseLevel,
) -> Result<(Tensor, Tensor)> {
    use PredictionType::{Epsilon, Sample, VPrediction};
    if let NoiseLevel::VariancePreserving { alpha, sigma } = level {
        return Ok(match prediction {
            Epsilon => ((x - sigma * output) / alpha, output.shallow_clone()),
            Sample => (output.shallow_clone(), (x - alpha * output) / sigma),
            VPrediction => (alpha * x - sigma * output, alpha * output + sigma * x),
        });
    }
    let x0 = predicted_x0(prediction, output, x, level)?;
    let eps = match (prediction, level) {
        (Epsilon, _) => output.shallow_clone(),
        (_, NoiseLevel::Sigma(s)) => {
            let inv: Vec<f64> = s.iter().map(|s| 1.0 / s).collect();
            (x - &x0) * per_sample(&inv, x)?
        }
        (_, _) => {
            let (alpha, sigma) = vp_tensors(level, x)?;
            (x - alpha * &x0) / sigma
        }
    };
    Ok((x0, eps))
}

/// Converts a model `output` of type `from` for the sample `x` at `level`
/// into type `to`.
pub fn convert(
    output: &Tensor,
    from: PredictionType,
    to: PredictionType,
    x: &Tensor,
    level: &NoiseLevel,
) -> Result<Tensor> {
    use PredictionType::{Epsilon, Sample, VPrediction};
    same_shape(x, output, "x_t", "model output")?;
    if from == to {
        return Ok(output.shallow_clone());
    }
    if let NoiseLevel::VariancePreserving { alpha, sigma } = level {
        match (from, to) {
            (Epsilon, VPrediction) => return Ok((output - x * sigma) / alpha),
            (Sample, VPrediction) => return Ok((x * alpha - output) / sigma),
            _ => {}
        }
    }
    let (x0, eps) = x0_and_eps(from, output, x, level)?;
    Ok(match to {
        Sample => x0,
        Epsilon => eps,
        VPrediction => {
            let (alpha, sigma) = vp_tensors(level, x)?;
            alpha * eps - sigma * x0
        }
    })
}

/// The variance-preserving (alpha, sigma) of a level as tensors.
fn vp_tensors(level: &NoiseLevel, like: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match level {
        NoiseLevel::VariancePreserving { alpha, sigma } => {
            (alpha.shallow_clone(), sigma.shallow_clone())
        }
        NoiseLevel::Sigma(s) | NoiseLevel::VariancePreservingSigma(s) => {
            let (a, s): (Vec<f64>, Vec<f64>) = s.iter().map(|&s| vp_coefficients(s)).unzip();
            (per_sample(&a, like)?, per_sample(&s, like)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    /// In every space, a model that predicts the truth gives back x_0 and ε,
    /// and every conversion maps the true values onto each other.
    #[test]
    fn every_space_recovers_the_truth() {
        let opts = (Kind::Double, Device::Cpu);
        tch::manual_seed(0);
        let x0 = Tensor::randn([3, 2, 4], opts);
        let eps = Tensor::randn([3, 2, 4], opts);
        let sigmas = vec![0.05, 1.3, 14.0];
        let (a, s): (Vec<f64>, Vec<f64>) = sigmas.iter().map(|&s| vp_coefficients(s)).unzip();
        let (at, st) = (per_sample(&a, &x0).unwrap(), per_sample(&s, &x0).unwrap());
        let x_vp = &x0 * &at + &eps * &st;
        let v = &eps * &at - &x0 * &st;
        let x_sigma = &x0 + &eps * per_sample(&sigmas, &x0).unwrap();
        let levels = [
            (
                NoiseLevel::VariancePreserving {
                    alpha: at.shallow_clone(),
                    sigma: st.shallow_clone(),
                },
                &x_vp,
            ),
            (NoiseLevel::Sigma(sigmas.clone()), &x_sigma),
            (NoiseLevel::VariancePreservingSigma(sigmas.clone()), &x_vp),
        ];
        let truth = |p| match p {
            PredictionType::Epsilon => &eps,
            PredictionType::Sample => &x0,
            PredictionType::VPrediction => &v,
        };
        let close = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) < 1e-9;
        for (level, x) in &levels {
            for &from in PredictionType::ALL {
                let (got_x0, got_eps) = x0_and_eps(from, truth(from), x, level).unwrap();
                assert!(
                    close(&got_x0, &x0) && close(&got_eps, &eps),
                    "{level:?} {from}"
                );
                let x0_only = predicted_x0(from, truth(from), x, level).unwrap();
                assert_eq!(x0_only, got_x0);
                for &to in PredictionType::ALL {
                    let got = convert(truth(from), from, to, x, level).unwrap();
                    assert!(close(&got, truth(to)), "{level:?} {from} -> {to}");
                }
            }
        }
        let e = convert(
            &eps,
            PredictionType::Epsilon,
            PredictionType::Sample,
            &eps.narrow(0, 0, 2),
            &levels[0].0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shape"), "{e}");
    }
}
