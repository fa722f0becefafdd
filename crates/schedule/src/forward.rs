//! The forward process q(x_t | x_0) for a batch: each sample `i` of `x_0`
//! is noised to its own timestep `t[i]`,
//!
//!   x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) ε,
//!
//! and the velocity of Salimans & Ho (2022), the target of v-prediction, is
//!
//!   v_t = sqrt(alpha_bar_t) ε - sqrt(1 - alpha_bar_t) x_0.
//!
//! Timesteps are an integer tensor of shape `[N]`, N being the batch size
//! (the first dimension of `x_0`); the coefficients are gathered in f64 on
//! the device of `x_0`, rounded once to its kind, and shaped `[N, 1, ...]`
//! to broadcast over the other dimensions. Out-of-range timesteps are an
//! error rather than a device-side assertion (checking them reads two
//! numbers back from the device).

use tch::{Device, Kind, Tensor};

use crate::batch::same_shape;
use crate::error::{Error, Result};
use crate::schedule::{Quantity, Schedule};

impl Schedule {
    /// x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, per sample.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
        same_shape(x0, noise, "x0", "noise")?;
        let a = self.gather(Quantity::SqrtAlphasCumprod, t, x0)?;
        let s = self.gather(Quantity::SqrtOneMinusAlphasCumprod, t, x0)?;
        Ok(x0 * a + noise * s)
    }

    /// v_t = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x0, per sample.
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
        same_shape(x0, noise, "x0", "noise")?;
        let a = self.gather(Quantity::SqrtAlphasCumprod, t, x0)?;
        let s = self.gather(Quantity::SqrtOneMinusAlphasCumprod, t, x0)?;
        Ok(noise * a - x0 * s)
    }

    /// `quantity` at each timestep of `t` (`[N]`, any integer kind, any
    /// device), as a tensor of `like`'s kind on `like`'s device with shape
    /// `[N, 1, ..., 1]` of `like`'s rank, so that it broadcasts against a
    /// batch shaped like `like`.
    pub fn gather(&self, quantity: Quantity, t: &Tensor, like: &Tensor) -> Result<Tensor> {
        if like.dim() == 0 || like.size()[0] != t.size().first().copied().unwrap_or(-1) {
            return Err(Error::Shape(format!(
                "timesteps of shape {:?} for a batch of shape {:?}: expected one per sample",
                t.size(),
                like.size()
            )));
        }
        let t = self.check_timesteps(t, like.device())?;
        let mut shape = vec![1i64; like.dim()];
        shape[0] = -1;
        Ok(self
            .tensor(quantity, like.device(), Kind::Double)
            .index_select(0, &t)
            .to_kind(like.kind())
            .reshape(shape))
    }

    /// Checks that `t` is an integer tensor `[N]` of timesteps in 0..T and
    /// returns it as Int64 on `device`.
    pub(crate) fn check_timesteps(&self, t: &Tensor, device: Device) -> Result<Tensor> {
        if !matches!(
            t.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(Error::Timesteps(format!(
                "expected an integer tensor, got {:?}",
                t.kind()
            )));
        }
        if t.dim() != 1 {
            return Err(Error::Timesteps(format!(
                "expected shape [N], got {:?}",
                t.size()
            )));
        }
        let t = t.to_device(device).to_kind(Kind::Int64);
        if t.numel() > 0 {
            let (lo, hi) = (t.min().int64_value(&[]), t.max().int64_value(&[]));
            let n = self.num_train_timesteps() as i64;
            if lo < 0 || hi >= n {
                let bad = if lo < 0 { lo } else { hi };
                return Err(Error::Timesteps(format!(
                    "timestep {bad} is outside 0..{n} (num_train_timesteps = {n})"
                )));
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;

    fn cosine() -> Schedule {
        Schedule::new(BetaSchedule::SquaredcosCapV2, 1000, 1e-4, 0.02).unwrap()
    }

    #[test]
    fn per_sample_coefficients_broadcast() {
        let s = cosine();
        let x0 = Tensor::ones([3, 2, 4, 4], (Kind::Float, Device::Cpu));
        let noise = Tensor::zeros([3, 2, 4, 4], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[0i64, 500, 999]);
        let xt = s.add_noise(&x0, &noise, &t).unwrap();
        assert_eq!(xt.size(), [3, 2, 4, 4]);
        assert_eq!(xt.kind(), Kind::Float);
        for (i, ti) in [0usize, 500, 999].into_iter().enumerate() {
            let want = s.alpha_bar(ti).sqrt();
            let got = xt.double_value(&[i as i64, 1, 3, 2]);
            assert!((got - want).abs() < 1e-7, "t={ti}: {got} vs {want}");
        }
        let v = s.velocity(&x0, &noise, &t).unwrap();
        let want = -(1.0 - s.alpha_bar(500)).sqrt();
        assert!((v.double_value(&[1, 0, 0, 0]) - want).abs() < 1e-7);
        let g = s
            .gather(Quantity::Snr, &t.to_kind(Kind::Int), &x0.select(1, 0))
            .unwrap();
        assert_eq!(g.size(), [3, 1, 1]);
    }

    #[test]
    fn bad_timesteps_are_errors() {
        let s = cosine();
        let x0 = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let err = |t: Tensor| s.add_noise(&x0, &x0, &t).unwrap_err().to_string();
        let e = err(Tensor::from_slice(&[0i64, 1000]));
        assert!(e.contains("timestep 1000 is outside 0..1000"), "{e}");
        let e = err(Tensor::from_slice(&[-1i64, 3]));
        assert!(e.contains("timestep -1"), "{e}");
        let e = err(Tensor::from_slice(&[1i64, 2, 3]));
        assert!(
            e.contains("timesteps of shape [3] for a batch of shape [2, 3]"),
            "{e}"
        );
        let e = err(Tensor::from_slice(&[1.0f32, 2.0]));
        assert!(e.contains("integer"), "{e}");
        let e = s
            .add_noise(&x0, &x0.view([3, 2]), &Tensor::from_slice(&[1i64, 2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("noise has shape [3, 2]"), "{e}");
    }
}
