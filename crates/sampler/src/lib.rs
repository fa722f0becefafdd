//! Reverse-process solvers for diffusion models, guidance and editing.
//!
//! Status: skeleton. This crate will hold one `Solver` trait with DDPM, DDIM,
//! DPM-Solver++, Euler and Heun implementations that match diffusers, the
//! sampling loop with classifier-free guidance, and the editing functions
//! (image-to-image, inpainting, denoising, interpolation). The `sampler`
//! binary reports that it is not available yet.
