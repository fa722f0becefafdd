//! The latent-diffusion VAE, weight-compatible with diffusers' `AutoencoderKL`
//! (Stable Diffusion's VAE and its relatives): images to latents and back.
//!
//! - [`config`]: [`VaeConfig`], diffusers' `vae/config.json` key for key,
//!   and the preset [`VaeConfig::stable_diffusion`].
//! - [`unet_2d_blocks`]: `DownEncoderBlock2D` and `UpDecoderBlock2D`, built
//!   from the `unet` crate's ResNet, downsampling and upsampling blocks
//!   (the mid block is the U-Net's `UNetMidBlock2D` without time embedding).
//! - [`vae`](mod@vae): the [`Encoder`], the [`Decoder`] and the posterior
//!   [`DiagonalGaussianDistribution`].
//! - [`autoencoder_kl`]: [`AutoencoderKL`], with diffusers' tiled encoding
//!   and decoding for large images.
//! - [`io`]: [`Vae`] (model + weights) with loading and saving in diffusers'
//!   folder layout, and the latent scaling of the diffusion pipelines
//!   (`scaling_factor`, `shift_factor`, `latents_mean`/`latents_std`).
//!
//! ```no_run
//! use vae::{tch::{Device, Kind, Tensor}, LatentDraw, Vae};
//! let vae = Vae::load("stable-diffusion-v1-5", Device::Cpu)?; // a pipeline or vae/ folder
//! let images = Tensor::rand([1, 3, 512, 512], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
//! let latents = vae.encode_latents(&images, LatentDraw::Mode)?; // [1, 4, 64, 64], scaled
//! let decoded = vae.decode_latents(&latents)?; // [1, 3, 512, 512]
//! # Ok::<(), vae::Error>(())
//! ```

pub mod autoencoder_kl;
pub mod config;
mod error;
pub mod io;
pub mod unet_2d_blocks;
pub mod vae;

pub use autoencoder_kl::{AutoencoderKL, Tiling};
pub use config::VaeConfig;
pub use error::{Error, Result};
pub use io::{LatentDraw, Vae};
pub use tch;
pub use vae::{Decoder, DiagonalGaussianDistribution, Encoder};
