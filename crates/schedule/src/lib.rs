//! Noise schedules and the forward process q(x_t | x_0) of DDPM-family
//! diffusion models, computed in f64 and viewable as tensors.
//!
//! - [`betas`]: the beta schedules `linear`, `scaled_linear`,
//!   `squaredcos_cap_v2` (cosine), `sigmoid`, given betas, and the
//!   zero-terminal-SNR rescaling, exactly as diffusers defines them.
//! - [`schedule`]: [`Schedule`], every quantity derived from the betas
//!   (alpha_bar, SNR, posterior coefficients, ...) as `&[f64]` or as a
//!   `tch::Tensor` on any device and kind; cheap to clone.
//! - [`forward`]: `add_noise`, the velocity, and per-sample coefficient
//!   gathering for a batch of timesteps.
//! - [`batch`]: per-sample coefficients shaped to broadcast over a batch.
//! - [`prediction`]: the three things a model can predict (epsilon, sample,
//!   v) and the one conversion between them that every solver uses, for a
//!   sample in variance-preserving or sigma space ([`NoiseLevel`]).
//! - [`loss_weight`]: uniform and min-SNR-gamma loss weights.
//! - [`config`]: [`SchedulerConfig`], which loads and writes diffusers'
//!   `scheduler_config.json` unchanged.
//! - [`plot`]: a PNG of alpha_bar and log-SNR against t for several schedules.
//! - [`strip`]: the forward process made visible, one image noised to
//!   several timesteps side by side.
//!
//! ```
//! use schedule::{BetaSchedule, Schedule};
//!
//! let cosine = Schedule::new(BetaSchedule::SquaredcosCapV2, 1000, 1e-4, 0.02).unwrap();
//! let linear = Schedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
//! // Halfway through, the cosine schedule has kept far more of the signal.
//! assert!(cosine.alpha_bar(500) > 0.45 && linear.alpha_bar(500) < 0.1);
//! ```

#[macro_use]
mod names;

pub mod batch;
pub mod betas;
pub mod config;
mod error;
pub mod forward;
pub mod loss_weight;
pub mod plot;
pub mod prediction;
pub mod schedule;
pub mod strip;

pub use betas::BetaSchedule;
pub use config::{SchedulerConfig, TimestepSpacing, VarianceType};
pub use error::{Error, Result};
pub use loss_weight::LossWeighting;
pub use prediction::{NoiseLevel, PredictionType};
pub use schedule::{Quantity, Schedule};
pub use strip::{forward_samples, forward_strip};
