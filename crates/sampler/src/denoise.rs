//! Denoising a real noisy image with a diffusion model.
//!
//! An image y = x_0 + n with Gaussian noise n of standard deviation S (in
//! [0, 1] pixel units; 2S in the model's [-1, 1] space) is, up to a scale,
//! a sample of the forward process: for the timestep t whose noise-to-signal
//! ratio sqrt((1 - alpha_bar_t) / alpha_bar_t) equals 2S,
//!
//! ```text
//! sqrt(alpha_bar_t) y = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) ε,
//! ```
//!
//! which is x_t exactly. Deterministic DDIM (eta = 0) from t down to 0 then
//! returns the model's estimate of the clean image.
//!
//! When S is unknown, [`estimate_noise_sigma`] estimates it from the image
//! with Donoho & Johnstone's (1994) robust estimator: the median absolute
//! value of the finest diagonal Haar wavelet coefficients, divided by
//! 0.6745 (the median of |N(0, 1)|). Those coefficients are nearly zero in
//! natural images and carry the noise at its full standard deviation.

use tch::{Kind, Tensor};

use crate::ddim::Ddim;
use crate::denoiser::Denoiser;
use crate::guidance::Conditioning;
use crate::sample::{sample, StepInfo};
use crate::solver::Solver;
use crate::{Error, Result};

/// The median of |N(0, 1)|.
const MAD_TO_SIGMA: f64 = 0.6745;

/// Estimates the standard deviation of additive Gaussian noise in an image
/// (`[C, H, W]` or `[N, C, H, W]` in [-1, 1], pooled over everything), in
/// [0, 1] pixel units: median(|HH|) / 0.6745 over the finest diagonal Haar
/// coefficients HH = (p00 - p01 - p10 + p11) / 2 of 2x2 blocks.
pub fn estimate_noise_sigma(image: &Tensor) -> Result<f64> {
    let size = image.size();
    let (h, w) = match size.len() {
        3 | 4 => (size[size.len() - 2], size[size.len() - 1]),
        _ => {
            return Err(Error::Shape(format!(
                "image of shape {size:?}: expected [C, H, W] or [N, C, H, W]"
            )))
        }
    };
    let (h2, w2) = (h / 2 * 2, w / 2 * 2);
    if h2 == 0 || w2 == 0 {
        return Err(Error::Shape(format!(
            "image of shape {size:?}: at least 2x2 pixels are needed to estimate noise"
        )));
    }
    let p = (image.f_to_kind(Kind::Double)? + 1.0) / 2.0;
    let d = p.dim() as i64;
    let p = p.f_narrow(d - 2, 0, h2)?.f_narrow(d - 1, 0, w2)?;
    let at = |r: i64, c: i64| -> Result<Tensor> {
        Ok(p.f_slice(d - 2, r, h2, 2)?.f_slice(d - 1, c, w2, 2)?)
    };
    let hh = (at(0, 0)? - at(0, 1)? - at(1, 0)? + at(1, 1)?) / 2.0;
    let median = hh.f_abs()?.f_flatten(0, -1)?.f_median()?.double_value(&[]);
    Ok(median / MAD_TO_SIGMA)
}

/// The training timestep whose noise-to-signal ratio
/// sqrt((1 - alpha_bar_t) / alpha_bar_t) is closest to `model_sigma` (the
/// noise's standard deviation in the model's space).
pub fn timestep_for_sigma(alphas_cumprod: &[f64], model_sigma: f64) -> usize {
    let ratio = |a: f64| ((1.0 - a) / a).sqrt();
    alphas_cumprod
        .iter()
        .enumerate()
        .min_by(|(_, &a), (_, &b)| {
            let (da, db) = (
                (ratio(a) - model_sigma).abs(),
                (ratio(b) - model_sigma).abs(),
            );
            da.total_cmp(&db)
        })
        .map_or(0, |(t, _)| t)
}

/// What [`denoise`] did.
#[derive(Debug)]
pub struct Denoised {
    /// The denoised images, `[N, C, H, W]` in the model's space.
    pub images: Tensor,
    /// The timestep the input was taken to be at.
    pub timestep: usize,
    /// The model's noise-to-signal ratio there, sqrt((1 - ab) / ab); twice
    /// the pixel-unit sigma it matches.
    pub model_sigma: f64,
    /// The DDIM steps run (model evaluations).
    pub steps: usize,
}

/// Denoises `noisy` (`[N, C, H, W]` in [-1, 1]) whose noise has standard
/// deviation `sigma` in [0, 1] pixel units: takes it as x_t at
/// [`timestep_for_sigma`] of 2 `sigma`, scales it by sqrt(alpha_bar_t) and
/// runs deterministic DDIM from t down to 0 through the timesteps below t of
/// `steps`-step DDIM over the model's schedule (`config`).
pub fn denoise(
    model: &dyn Denoiser,
    config: &schedule::SchedulerConfig,
    noisy: &Tensor,
    sigma: f64,
    steps: usize,
    conditioning: &Conditioning,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Denoised> {
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::Unsupported(format!(
            "noise sigma {sigma}: expected a number >= 0 (in [0, 1] pixel units)"
        )));
    }
    let full = Ddim::new(config, steps, 0.0)?;
    let ab = full.alphas_cumprod();
    let t = timestep_for_sigma(ab, 2.0 * sigma);
    let model_sigma = ((1.0 - ab[t]) / ab[t]).sqrt();
    let mut path = vec![t];
    path.extend(
        full.timesteps()
            .iter()
            .map(|&s| s as usize)
            .filter(|&s| s < t),
    );
    let mut ddim = Ddim::with_timesteps(config, &path, 0.0)?;
    let x_t = noisy.f_to_kind(Kind::Float)? * ab[t].sqrt();
    let images = sample(
        model,
        &mut ddim,
        &x_t,
        conditioning,
        &mut crate::noise::TorchRng,
        progress,
    )?;
    Ok(Denoised {
        images,
        timestep: t,
        model_sigma,
        steps: path.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_estimator_finds_the_noise_of_a_smooth_image() {
        tch::manual_seed(11);
        let opts = (Kind::Double, Device::Cpu);
        // A smooth ramp (no diagonal detail) plus noise of sigma 0.1 in
        // pixel units (0.2 in [-1, 1]).
        let ramp = Tensor::linspace(-0.5, 0.5, 64, opts)
            .view([1, 1, 64])
            .expand([1, 64, 64], false);
        let noisy = &ramp + Tensor::randn([1, 64, 64], opts) * 0.2;
        let s = estimate_noise_sigma(&noisy).unwrap();
        assert!((s - 0.1).abs() < 0.01, "{s}");
        assert!(estimate_noise_sigma(&ramp).unwrap() < 1e-9);
        assert!(estimate_noise_sigma(&Tensor::zeros([1, 1, 5], opts)).is_err());
    }

    #[test]
    fn timesteps_match_noise_levels() {
        let s = schedule::Schedule::new(schedule::BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let ab = s.alphas_cumprod();
        let t = 300;
        let sigma = ((1.0 - ab[t]) / ab[t]).sqrt();
        assert_eq!(timestep_for_sigma(ab, sigma), t);
        assert_eq!(timestep_for_sigma(ab, 0.0), 0);
        assert_eq!(timestep_for_sigma(ab, 1e9), 999);
    }
}
