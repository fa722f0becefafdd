//! The forward process made visible: one image noised to several timesteps
//! with the same noise, side by side.
//!
//! Column k is x_{t_k} = sqrt(alpha_bar_{t_k}) x_0 + sqrt(1 - alpha_bar_{t_k}) ε
//! with one ε for all columns, so the strip shows the signal fading into that
//! noise at the pace of the schedule.
//!
//! ```
//! use schedule::{strip, BetaSchedule, Schedule};
//! use tch::{Device, Kind, Tensor};
//!
//! let cosine = Schedule::new(BetaSchedule::SquaredcosCapV2, 1000, 1e-4, 0.02).unwrap();
//! let x0 = Tensor::zeros([1, 28, 28], (Kind::Float, Device::Cpu));
//! let noise = Tensor::randn([1, 28, 28], (Kind::Float, Device::Cpu));
//! let image = strip::forward_strip(&x0, &cosine, &[0, 250, 500, 999], &noise).unwrap();
//! assert_eq!(image.size(), [1, 28 + 4, 4 * 30 + 2]); // 2-pixel padding
//! ```

use tch::{Kind, Tensor};

use crate::batch::same_shape;
use crate::schedule::Schedule;
use crate::{Error, Result};

/// x_t for each of `timesteps`: `x0` and `noise` are `[C, H, W]`; returns
/// `[K, C, H, W]` (K = number of timesteps) of `x0`'s kind.
pub fn forward_samples(
    x0: &Tensor,
    schedule: &Schedule,
    timesteps: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    same_shape(x0, noise, "x0", "noise")?;
    if x0.dim() != 3 {
        return Err(Error::Shape(format!(
            "x0 has shape {:?}: expected one image [C, H, W]",
            x0.size()
        )));
    }
    if timesteps.is_empty() {
        return Err(Error::Timesteps("no timesteps to show".into()));
    }
    let k = timesteps.len() as i64;
    let t = Tensor::from_slice(
        &timesteps
            .iter()
            .map(|&t| i64::try_from(t).unwrap_or(i64::MAX))
            .collect::<Vec<_>>(),
    );
    let expand = |x: &Tensor| x.unsqueeze(0).expand([k, -1, -1, -1], false);
    let noise = noise.to_kind(x0.kind()).to_device(x0.device());
    schedule.add_noise(&expand(x0), &expand(&noise), &t)
}

/// [`forward_samples`] laid out as one image `[C, H + 4, K (W + 2) + 2]`:
/// the columns left to right with 2 pixels of mid-grey padding, in [-1, 1]
/// (values of x_t beyond it are clipped when written as an image).
pub fn forward_strip(
    x0: &Tensor,
    schedule: &Schedule,
    timesteps: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    let samples = forward_samples(x0, schedule, timesteps, noise)?;
    let k = samples.size()[0];
    Ok(tensor::image::make_grid(
        &samples.to_kind(Kind::Float),
        k,
        2,
        0.0,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BetaSchedule;
    use tch::Device;

    #[test]
    fn columns_are_the_forward_process_with_one_noise() {
        let s = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let opts = (Kind::Double, Device::Cpu);
        let x0 = Tensor::full([2, 3, 4], 0.5, opts);
        let noise = Tensor::full([2, 3, 4], -1.0, opts);
        let xs = forward_samples(&x0, &s, &[0, 500, 999], &noise).unwrap();
        assert_eq!(xs.size(), [3, 2, 3, 4]);
        for (k, t) in [0usize, 500, 999].into_iter().enumerate() {
            let ab = s.alpha_bar(t);
            let want = 0.5 * ab.sqrt() - (1.0 - ab).sqrt();
            let got = xs.double_value(&[k as i64, 1, 2, 3]);
            assert!((got - want).abs() < 1e-12, "t={t}");
        }
        let strip = forward_strip(&x0, &s, &[0, 500, 999], &noise).unwrap();
        assert_eq!(strip.size(), [2, 3 + 4, 3 * (4 + 2) + 2]);
        let e = forward_samples(&x0, &s, &[1000], &noise).unwrap_err();
        assert!(e.to_string().contains("timestep 1000"), "{e}");
        assert!(forward_samples(&x0, &s, &[], &noise).is_err());
        assert!(forward_samples(&x0.unsqueeze(0), &s, &[1], &noise.unsqueeze(0)).is_err());
    }
}
