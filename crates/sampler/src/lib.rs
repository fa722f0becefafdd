//! Reverse-process solvers for DDPM-family diffusion models, exact against
//! diffusers 0.42.1, and the sampling loop with classifier-free guidance.
//!
//! - [`solver`]: the [`Solver`] trait (one `step` signature, per-sample
//!   positions allowed); [`factory`]: [`by_name`], which builds a
//!   `Box<dyn Solver>` from a name and a diffusers `scheduler_config.json`.
//! - One file per solver, named as diffusers names them: [`ddpm`]
//!   (ancestral; `fixed_small`, `fixed_large`, `learned_range` variances),
//!   [`ddim`] (eta), [`dpm_solver`] (DPM-Solver++ multistep, order 1-3),
//!   [`euler`], [`euler_ancestral`], [`heun`] (Karras sigmas optional),
//!   each with typed options read from the config (e.g.
//!   [`dpm_solver::DpmSolverOptions`]) and a `with_options` constructor;
//!   [`sigma`]: the noise-level spacings the sigma-space solvers share;
//!   [`X0Processing`]: clipping and dynamic thresholding of the predicted x_0.
//! - [`sample`](mod@sample): the loop, the same for every solver, with
//!   classifier-free guidance.
//! - [`noise`]: where stochastic solvers draw their noise (libtorch's
//!   seeded generator, or recorded draws).
//! - [`trajectory`]: pictures of x_t and the predicted x_0 along the way.
//! - Editing with a trained model: [`edit`](mod@edit) (image-to-image,
//!   SDEdit), [`repaint`] (inpainting, RePaint), [`denoise`](mod@denoise)
//!   (real noisy images, with a noise estimator), [`inversion`] (DDIM
//!   inversion and interpolation), and [`input`] (image files preprocessed
//!   as the model's training data).
//! - [`cli`]: the flags and the run of `sampler` / `lmzh sample`, and of
//!   `lmzh edit | inpaint | denoise | interpolate | forward`.
//!
//! ```no_run
//! use sampler::{by_name, sample, Conditioning, SolverOptions, TorchRng};
//! use schedule::SchedulerConfig;
//! use tch::{Device, Kind, Tensor};
//!
//! let config = SchedulerConfig::load("ddpm-cifar10-32/scheduler/scheduler_config.json")?;
//! let unet = unet::UNet::load("ddpm-cifar10-32", Device::Cpu)?;
//! let mut solver = by_name("dpm++2m", &config, 20, &SolverOptions::default())?;
//! let x_t = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let model = |x: &Tensor, t: &Tensor, c: Option<&Tensor>| Ok(unet.forward(x, t, c)?);
//! let x0 = sample(&model, solver.as_mut(), &x_t, &Conditioning::default(), &mut TorchRng, &mut |_| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cli;
pub mod ddim;
pub mod ddpm;
pub mod denoise;
mod discrete;
pub mod dpm_solver;
pub mod edit;
mod error;
pub mod euler;
pub mod euler_ancestral;
mod extra;
pub mod factory;
pub mod heun;
pub mod input;
pub mod inversion;
pub mod noise;
mod numpy;
pub mod repaint;
pub mod sample;
pub mod sigma;
pub mod solver;
mod tables;
pub mod trajectory;
mod x0;

pub use denoise::{denoise, estimate_noise_sigma, Denoised};
pub use edit::edit;
pub use error::{Error, Result};
pub use factory::{by_name, SolverOptions, SOLVER_NAMES};
pub use input::InputSpec;
pub use inversion::{ddim_invert, interpolate, inversion_ddim, slerp, InterpolateOptions};
pub use noise::{NoiseSource, ReplayNoise, TorchRng};
pub use repaint::{inpaint, RePaint};
pub use sample::{sample, sample_from, Conditioning, Model, StepInfo};
pub use solver::{add_noise, inference_steps, Solver, StepIndex, StepOutput};
pub use x0::{threshold_sample, X0Processing};
