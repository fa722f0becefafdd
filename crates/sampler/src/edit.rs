//! Image-to-image editing, SDEdit (Meng et al. 2022): noise an image part of
//! the way with the forward process, then run the reverse process from
//! there. The model keeps the image's coarse layout (what the noise has not
//! destroyed) and redraws the details, towards its class label when one is
//! given.
//!
//! `strength` in [0, 1] picks the starting position among the solver's
//! inference steps as diffusers' img2img pipelines do:
//!
//! ```text
//! init = min(floor(steps * strength), steps)
//! start = (steps - init) * order      // a position in solver.timesteps()
//! x = add_noise(image, noise, start)  // in the solver's space
//! ```
//!
//! so strength 0 runs no step at all and returns the image unchanged, and
//! strength 1 runs every step. At strength 1 the image is not used: the
//! start is the scaled noise `noise * init_noise_sigma`, exactly what plain
//! sampling starts from (diffusers' inpainting pipelines do the same for
//! `strength == 1`; adding the image's remaining sqrt(alpha_bar_T) of
//! signal would make the result differ from plain sampling for no visible
//! gain).
//!
//! ```no_run
//! use sampler::{by_name, edit, Cond, Conditioning, Pipeline, SolverOptions, TorchRng};
//! use tch::{Device, Kind, Tensor};
//!
//! let pipe = Pipeline::open("assets/models/digits")?;
//! let unet = pipe.load_unet(Device::Cpu)?;
//! let mut solver = by_name("ddim", &pipe.scheduler, 50, &SolverOptions::default())?;
//! let image = tensor::image::load_image("digit.png")?.unsqueeze(0); // [1, 1, 28, 28]
//! let noise = Tensor::randn([1, 1, 28, 28], (Kind::Float, Device::Cpu));
//! let conditioning = Conditioning::from(Cond::labels(Tensor::from_slice(&[8i64])));
//! let edited = edit(&unet, solver.as_mut(), &image, 0.6, &noise, &conditioning, &mut TorchRng, &mut |_| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use tch::{Kind, Tensor};

use crate::denoiser::Denoiser;
use crate::guidance::Conditioning;
use crate::noise::NoiseSource;
use crate::sample::{sample_from, StepInfo};
use crate::solver::{add_noise, inference_steps, Solver};
use crate::{Error, Result};

/// The position in `solver.timesteps()` where an edit of `strength` starts
/// (`timesteps().len()` when it runs no step). Errors unless `strength` is
/// in [0, 1].
pub fn start_position(solver: &dyn Solver, strength: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(Error::Unsupported(format!(
            "strength {strength}: expected a number in [0, 1] (0 keeps the image, 1 samples anew)"
        )));
    }
    let steps = inference_steps(solver);
    // Python's int(): truncation, as diffusers' get_timesteps.
    let init = ((steps as f64 * strength) as usize).min(steps);
    if init == 0 {
        // No step at all (PNDM's list has an extra evaluation past `steps`).
        return Ok(solver.timesteps().len());
    }
    Ok(((steps - init) * solver.order()).min(solver.timesteps().len()))
}

/// SDEdit: `image` (`[N, C, H, W]` in the model's space, [-1, 1]) noised
/// with the standard-normal `noise` (same shape) to the position that
/// `strength` selects, then denoised by `solver` with `conditioning`.
/// `rng` feeds stochastic solvers; `progress` is called after every model
/// evaluation. Strength 0 returns a copy of `image`; strength 1 equals
/// [`crate::sample()`] from `noise`.
#[allow(clippy::too_many_arguments)]
pub fn edit(
    model: &dyn Denoiser,
    solver: &mut dyn Solver,
    image: &Tensor,
    strength: f64,
    noise: &Tensor,
    conditioning: &Conditioning,
    rng: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Tensor> {
    let start = start_position(solver, strength)?;
    if image.size() != noise.size() {
        return Err(Error::Shape(format!(
            "the image batch has shape {:?} but the noise has shape {:?}",
            image.size(),
            noise.size()
        )));
    }
    if start == solver.timesteps().len() {
        return Ok(image.copy());
    }
    let noise = noise.f_to_kind(Kind::Float)?.f_to_device(image.device())?;
    let x = if start == 0 {
        noise * solver.init_noise_sigma()
    } else {
        add_noise(solver, &image.f_to_kind(Kind::Float)?, &noise, start)?
    };
    sample_from(model, solver, &x, start, conditioning, rng, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::{by_name, SolverOptions, SOLVER_NAMES};
    use schedule::SchedulerConfig;

    #[test]
    fn strength_selects_positions_as_diffusers_img2img() {
        let cfg = SchedulerConfig::default();
        let opts = SolverOptions::default();
        let ddim = by_name("ddim", &cfg, 50, &opts).unwrap();
        assert_eq!(start_position(ddim.as_ref(), 0.0).unwrap(), 50);
        assert_eq!(start_position(ddim.as_ref(), 1.0).unwrap(), 0);
        assert_eq!(start_position(ddim.as_ref(), 0.6).unwrap(), 20);
        // int(50 * 0.29) = int(14.499999999999998) = 14
        assert_eq!(start_position(ddim.as_ref(), 0.29).unwrap(), 36);
        // Heun: two positions per step, starting on a first stage.
        let heun = by_name("heun", &cfg, 10, &opts).unwrap();
        assert_eq!(heun.timesteps().len(), 19);
        assert_eq!(start_position(heun.as_ref(), 0.5).unwrap(), 10);
        assert_eq!(start_position(heun.as_ref(), 0.0).unwrap(), 19);
        assert_eq!(start_position(heun.as_ref(), 1.0).unwrap(), 0);
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = start_position(ddim.as_ref(), bad).unwrap_err().to_string();
            assert!(e.contains("strength"), "{e}");
        }
        for name in SOLVER_NAMES {
            let s = by_name(name, &cfg, 7, &opts).unwrap();
            assert_eq!(inference_steps(s.as_ref()), 7, "{name}");
        }
    }

    /// add_noise at every position is the solver's own state there: a
    /// DDPM-space x_t scaled as the solver's model input undoes it.
    #[test]
    fn add_noise_matches_each_solvers_model_input() {
        let cfg = SchedulerConfig::default();
        let x0 = Tensor::ones([1, 1, 2, 2], (Kind::Double, tch::Device::Cpu)) * 0.5;
        let noise = Tensor::ones([1, 1, 2, 2], (Kind::Double, tch::Device::Cpu));
        for name in SOLVER_NAMES {
            let s = by_name(name, &cfg, 10, &SolverOptions::default()).unwrap();
            for i in [0, 3] {
                let x = add_noise(s.as_ref(), &x0, &noise, i).unwrap();
                let input = s.scale_model_input(&x, i.into()).unwrap();
                // The model always sees sqrt(ab) x0 + sqrt(1 - ab) eps.
                let (a, b) = s.noise_coefficients(i);
                let norm = (a * a + b * b).sqrt();
                let want = (0.5 * a + b) / norm;
                let got = input.double_value(&[0, 0, 1, 1]);
                assert!((got - want).abs() < 1e-6, "{name} at {i}: {got} vs {want}");
                assert!((norm - 1.0).abs() < 1e-6 || a == 1.0, "{name}");
            }
        }
    }
}
