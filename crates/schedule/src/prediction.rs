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

use tch::Tensor;

use crate::forward::same_shape;
use crate::schedule::{Quantity, Schedule};
use crate::Result;

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

impl Schedule {
    /// Converts a model output of type `from` at (`x_t`, `t`) into type `to`.
    pub fn convert(
        &self,
        output: &Tensor,
        from: PredictionType,
        to: PredictionType,
        x_t: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        use PredictionType::{Epsilon, Sample, VPrediction};
        same_shape(x_t, output, "x_t", "model output")?;
        if from == to {
            return Ok(output.shallow_clone());
        }
        let a = self.gather(Quantity::SqrtAlphasCumprod, t, x_t)?;
        let s = self.gather(Quantity::SqrtOneMinusAlphasCumprod, t, x_t)?;
        Ok(match (from, to) {
            (Epsilon, Sample) => (x_t - output * &s) / &a,
            (Epsilon, VPrediction) => (output - x_t * &s) / &a,
            (Sample, Epsilon) => (x_t - output * &a) / &s,
            (Sample, VPrediction) => (x_t * &a - output) / &s,
            (VPrediction, Sample) => x_t * &a - output * &s,
            (VPrediction, Epsilon) => x_t * &s + output * &a,
            (Epsilon, Epsilon) | (Sample, Sample) | (VPrediction, VPrediction) => {
                unreachable!("handled above")
            }
        })
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

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;
    use crate::BetaSchedule;

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
