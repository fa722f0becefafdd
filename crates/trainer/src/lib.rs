//! The diffusion training loop: the main job of LMZH.
//!
//! `cargo run -p trainer` (or `lmzh train`) with no arguments trains a small
//! class-conditional U-Net on the bundled digits and leaves a run directory
//! with samples, metrics, checkpoints and a diffusers export. As a library:
//! [`Trainer::new`] sets a run up, [`Trainer::step`] trains one optimiser
//! step, [`Trainer::run`] loops with the periodic hooks, and [`train()`] does
//! all three (see `examples/train_tiny.rs`).
//!
//! - [`config`]: [`TrainConfig`], every knob, as TOML, with presets;
//! - [`mod@trainer`]: [`Trainer`], the setup (resume, data, model, optimiser);
//! - [`step`]: one optimiser step (objective, label dropout, the guard);
//! - [`mod@train`]: the loop and its hooks (metrics, samples, checkpoints,
//!   evaluation), Ctrl-C;
//! - [`model`]: what a run trains: a `UNet2DModel`, or for text
//!   conditioning a `UNet2DConditionModel` with a CLIP text encoder trained
//!   with it from scratch (CLIP's tokenizer, bundled);
//! - [`objective`]: the loss of one micro-batch;
//! - [`optim`]: AdamW with checkpointable state, clipping, LR schedule;
//! - [`ema`]: the weight average used for sampling and export;
//! - [`checkpoint`]: one safetensors file with the whole training state;
//! - [`evaluate`]: FD/KID during training, and the best checkpoint;
//! - [`run_dir`]: the run folder, metrics and the diffusers export;
//! - [`progress`]: what the loop reports as it goes (a progress bar on a
//!   terminal, plain progress lines otherwise);
//! - `args` (feature `cli`, on by default): the command line shared by
//!   `trainer` and `lmzh train`;
//! - [`distributed`]: data-parallel training over several processes (c10d:
//!   Gloo, NCCL), under torchrun or `lmzh train --nproc N` (`launch`,
//!   feature `cli`: the local launcher behind `--nproc`).

#[cfg(feature = "cli")]
pub mod args;
pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod ema;
mod error;
pub mod evaluate;
mod hooks;
#[cfg(feature = "cli")]
pub mod launch;
pub mod model;
pub mod objective;
pub mod optim;
mod plot;
mod preview;
pub mod progress;
pub mod run_dir;
pub mod step;
pub mod train;
pub mod trainer;
pub mod vae_train;

pub use config::TrainConfig;
pub use error::{Error, Result};
pub use progress::Progress;
pub use step::{MicroBatch, StepOutput};
pub use train::{train, Summary};
pub use trainer::{TrainOptions, Trainer};
