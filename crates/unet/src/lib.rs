//! The noise-prediction U-Net, weight-compatible with diffusers `UNet2DModel`.
//!
//! Status: skeleton. This crate will hold the U-Net blocks (timestep
//! embedding, `ResnetBlock2D`, attention, down/up/mid blocks), a
//! `UNetConfig` that reads diffusers' `config.json`, and safetensors loading
//! and saving in diffusers' layout. Nothing is implemented yet.
