//! The reverse process of DDPM-family diffusion models: solvers exact
//! against diffusers 0.42.1, one sampling loop for every model, classifier-
//! free guidance on any conditioning, and editing with a trained model.
//!
//! - [`denoiser`]: the [`Denoiser`] trait the loop calls (the U-Net,
//!   closures and wrappers implement it) and [`Cond`], what a model is
//!   conditioned on (class labels, text embeddings, extra input channels).
//! - [`guidance`]: [`Conditioning`] = a [`Cond`] plus an optional
//!   [`Guidance`] (scale and unconditional branch: null label, empty or
//!   negative prompt); cond and uncond run as one batched forward pass or
//!   one after the other ([`Batching`], chosen by batch size and device).
//! - [`pipeline`]: [`Pipeline`], a diffusers pipeline, model or run folder
//!   resolved in one place (U-Net, scheduler config, `run.json`).
//! - [`solver`]: the [`Solver`] trait (one `step` signature, per-sample
//!   positions allowed); [`factory`]: [`by_name`], which builds a
//!   `Box<dyn Solver>` from a name and a diffusers `scheduler_config.json`.
//! - One file per solver, named as diffusers names them: [`ddpm`]
//!   (ancestral; `fixed_small`, `fixed_large`, `learned_range` variances),
//!   [`ddim`] (eta), [`dpm_solver`] (DPM-Solver++ multistep, order 1-3),
//!   [`euler`], [`euler_ancestral`], [`heun`] (Karras sigmas optional),
//!   [`pndm`] (PNDM, and PLMS with `skip_prk_steps`: Stable Diffusion 1.x's),
//!   each with typed options read from the config (e.g.
//!   [`dpm_solver::DpmSolverOptions`]) and a `with_options` constructor;
//!   [`sigma`]: the noise-level spacings the sigma-space solvers share;
//!   [`X0Processing`]: clipping and dynamic thresholding of the predicted x_0.
//! - [`sample`](mod@sample): the loop, the same for every solver.
//! - [`noise`]: where stochastic solvers draw their noise (libtorch's
//!   seeded generator, or recorded draws).
//! - [`trajectory`]: pictures of x_t and the predicted x_0 along the way.
//! - Editing with a trained model: [`edit`](mod@edit) (image-to-image,
//!   SDEdit), [`repaint`] (inpainting, RePaint), [`denoise`](mod@denoise)
//!   (real noisy images, with a noise estimator), [`inversion`] (DDIM
//!   inversion and interpolation), and [`input`] (image files preprocessed
//!   as the model's training data).
//! - `cli` (feature `cli`, on by default): the flags and the run of
//!   `sampler` / `lmzh sample`, and of `lmzh edit | inpaint | denoise |
//!   interpolate | forward`. Depend with `default-features = false` for
//!   the library alone (no clap, indicatif or tracing-subscriber).
//!
//! ```no_run
//! use sampler::{by_name, sample, Conditioning, Pipeline, SolverOptions, TorchRng};
//! use tch::{Device, Kind, Tensor};
//!
//! let pipe = Pipeline::open("assets/models/digits")?;
//! let unet = pipe.load_unet(Device::Cpu)?;
//! let mut solver = by_name("dpm++2m", &pipe.scheduler, 20, &SolverOptions::default())?;
//! let x_t = Tensor::randn([10, 1, 28, 28], (Kind::Float, Device::Cpu));
//! let labels = Tensor::arange(10, (Kind::Int64, Device::Cpu));
//! let cond = Conditioning::class(Some(labels), 2.0, pipe.null_label(unet.config()))?;
//! let x0 = sample(&unet, solver.as_mut(), &x_t, &cond, &mut TorchRng, &mut |_| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "cli")]
pub mod cli;
pub mod ddim;
pub mod ddpm;
pub mod denoise;
pub mod denoiser;
mod discrete;
pub mod dpm_solver;
pub mod edit;
mod error;
pub mod euler;
pub mod euler_ancestral;
mod extra;
pub mod factory;
pub mod guidance;
pub mod heun;
pub mod input;
pub mod inversion;
pub mod noise;
mod numpy;
pub mod pipeline;
pub mod pndm;
pub mod repaint;
pub mod sample;
pub mod sigma;
pub mod solver;
mod tables;
pub mod text_editing;
pub mod text_to_image;
pub mod trajectory;
mod x0;

pub use denoise::{denoise, estimate_noise_sigma, Denoised};
pub use denoiser::{Autocast, Cond, Denoiser};
pub use edit::edit;
pub use error::{Error, Result};
pub use factory::{by_name, default_for_config, name_for_class, SolverOptions, SOLVER_NAMES};
pub use guidance::{guide, guide_rescaled, Batching, Conditioning, Guidance};
pub use input::InputSpec;
pub use inversion::{ddim_invert, interpolate, inversion_ddim, slerp, InterpolateOptions};
pub use noise::{NoiseSource, ReplayNoise, TorchRng};
pub use pipeline::{Pipeline, RunInfo};
pub use repaint::{inpaint, RePaint};
pub use sample::{sample, sample_from, sample_from_with, StepInfo};
pub use solver::{add_noise, inference_steps, Solver, StepIndex, StepOutput};
pub use x0::{threshold_sample, X0Processing};
