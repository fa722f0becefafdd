//! The libtorch-backed base that every other LMZH crate stands on.
//!
//! - [`amp`]: mixed precision (bf16/f16 autocast) on CPU and CUDA.
//! - [`device`]: `auto | cpu | cuda[:N]` device selection with clear errors.
//! - [`seed`]: global seeding that makes CPU runs bit-reproducible.
//! - [`dtype`]: the floating-point types the toolkit works in.
//! - [`safetensors`]: read and write named tensors, exactly.
//! - [`image`]: images (8/16-bit grey, grey+alpha, RGB, RGBA) <-> `[C, H, W]`
//!   tensors in [-1, 1], and sample grids.
//! - [`fs`]: atomic file writes (temp file + rename) used for every output.
//! - [`io_error`]: I/O errors worded as a person expects (`no such file: PATH`).
//! - [`layout`]: channels-last memory format for 4-d tensors.
//! - [`runtime`]: what libtorch this process runs on (version, threads, CUDA).
//! - [`distributed`]: multi-process collectives on c10d (Gloo, NCCL), as
//!   torch.distributed runs them.

pub mod amp;
pub mod device;
pub mod distributed;
pub mod dtype;
mod error;
pub mod fs;
pub mod image;
pub mod io_error;
pub mod layout;
pub mod runtime;
pub mod safetensors;
pub mod seed;

pub use amp::Precision;
pub use device::DeviceSpec;
pub use dtype::DType;
pub use error::{Error, Result};
pub use tch;
