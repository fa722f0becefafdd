//! Noise schedules and the forward process q(x_t | x_0).
//!
//! Status: skeleton. This crate will hold the beta schedules (`linear`,
//! `scaled_linear`, `squaredcos_cap_v2`, `sigmoid`, zero-terminal-SNR
//! rescaling), the quantities derived from them, `add_noise`, the
//! prediction-type conversions and loss weights, with a diffusers-compatible
//! `SchedulerConfig`. Nothing is implemented yet.
