//! The noise-prediction U-Nets, weight-compatible with diffusers
//! `UNet2DModel` (pixel models, optionally class-conditional) and
//! `UNet2DConditionModel` (Stable Diffusion's text-conditioned U-Net).
//!
//! - [`config`]: [`UNetConfig`], diffusers' `config.json` key for key, and
//!   the presets ([`UNetConfig::ddpm_cifar10`], [`UNetConfig::small_grey`],
//!   [`UNetConfig::tiny`]).
//! - [`embeddings`], [`resnet`], [`attention`], [`downsampling`],
//!   [`upsampling`], [`unet_2d_blocks`], [`unet_2d`]: the blocks, one file
//!   each, named as in diffusers; variable names are the state-dict keys.
//! - [`condition_config`], [`cross_attention`], [`feed_forward`],
//!   [`transformer_2d`], [`unet_2d_condition_blocks`], [`text_time_embedding`],
//!   [`unet_2d_condition`]: `UNet2DConditionModel` ([`UNetConditionConfig`])
//!   and the cross-attention blocks and pooled-text embedding it adds.
//! - [`io`]: [`UNet`] and [`ConditionUNet`] (model + weights) with loading
//!   and saving in diffusers' folder layout.
//! - [`layers`]: PyTorch-initialised conv/linear/norm layers and the FLOP
//!   convention (1 multiply-add = 2 FLOPs).
//!
//! ```no_run
//! use unet::{tch::{Device, Tensor}, UNet};
//! let unet = UNet::load("ddpm-cifar10-32", Device::Cpu)?;
//! let x = Tensor::randn([4, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
//! let eps = unet.forward(&x, &Tensor::from(500i64), None)?;
//! # Ok::<(), unet::Error>(())
//! ```

pub mod activations;
pub mod attention;
pub mod condition_config;
pub mod config;
pub mod cross_attention;
pub mod downsampling;
pub mod embeddings;
mod error;
pub mod feed_forward;
pub mod io;
pub mod layers;
pub mod resnet;
pub mod text_time_embedding;
pub mod transformer_2d;
pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod unet_2d_condition;
pub mod unet_2d_condition_blocks;
pub mod upsampling;

pub use condition_config::UNetConditionConfig;
pub use config::UNetConfig;
pub use error::{Error, Result};
pub use io::{ConditionUNet, UNet};
pub use tch;
pub use unet_2d::UNet2DModel;
pub use unet_2d_condition::UNet2DConditionModel;

/// The diffusers version this implementation follows and writes into the
/// `_diffusers_version` of the configs it saves.
pub const DIFFUSERS_VERSION: &str = "0.42.1";
