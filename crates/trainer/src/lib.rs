//! The diffusion training loop: the main job of LMZH.
//!
//! `cargo run -p trainer` (or `lmzh train`) with no arguments trains a small
//! class-conditional U-Net on the bundled digits and leaves a run directory
//! with samples, metrics, checkpoints and a diffusers export:
//!
//! - [`config`]: [`TrainConfig`], every knob, as TOML, with presets;
//! - [`mod@train`]: the loop (objective, label dropout, guards, Ctrl-C);
//! - [`optim`]: AdamW with checkpointable state, clipping, LR schedule;
//! - [`ema`]: the weight average used for sampling and export;
//! - [`checkpoint`]: one safetensors file with the whole training state;
//! - [`evaluate`]: FD/KID during training, and the best checkpoint;
//! - [`run_dir`]: the run folder, metrics and the diffusers export;
//! - [`args`]: the command line shared by `trainer` and `lmzh train`;
//! - [`distributed`]: data-parallel training over several processes (c10d:
//!   Gloo, NCCL), under torchrun or `lmzh train --nproc N`.

pub mod args;
pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod ema;
mod error;
pub mod evaluate;
pub mod optim;
mod plot;
mod preview;
pub mod run_dir;
pub mod train;

pub use config::TrainConfig;
pub use error::{Error, Result};
pub use train::{train, Summary, TrainOptions};
