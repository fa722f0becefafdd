//! The diffusion training loop.
//!
//! Status: skeleton. This crate will hold the training loop (objectives, AdamW
//! with checkpointable state, EMA, mixed precision), checkpoints with exact
//! resume, the run directory with metrics and sample grids, and the config
//! with presets. The `trainer` binary reports that it is not available yet.
