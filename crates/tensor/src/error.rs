//! The error type of the `tensor` crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the file, tensor
/// or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid device {spec:?}: expected `auto`, `cpu`, `cuda` or `cuda:N`")]
    InvalidDevice { spec: String },

    #[error("device {spec} requested but CUDA is not available: {reason}")]
    CudaUnavailable { spec: String, reason: String },

    #[error("device cuda:{index} requested but only {count} CUDA device(s) are visible")]
    CudaIndexOutOfRange { index: usize, count: usize },

    #[error("invalid dtype {name:?}: expected one of f32, f64, bf16, f16")]
    InvalidDType { name: String },

    #[error("invalid precision {name:?}: expected fp32 (or no), bf16 or fp16")]
    InvalidPrecision { name: String },

    #[error("{precision} autocast on {device} is not available: {reason}")]
    AutocastUnavailable {
        precision: String,
        device: String,
        reason: String,
    },

    /// A file or folder that cannot be read or written; displayed as
    /// [`crate::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", crate::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path}: not a valid safetensors file: {reason}")]
    SafeTensors { path: PathBuf, reason: String },

    #[error("{path}: tensor {name:?} has dtype {dtype}, which libtorch cannot hold")]
    UnsupportedTensorDType {
        path: PathBuf,
        name: String,
        dtype: String,
    },

    #[error("{path}: cannot read image: {reason}")]
    ImageDecode { path: PathBuf, reason: String },

    #[error("{path}: cannot write image: {reason}")]
    ImageEncode { path: PathBuf, reason: String },

    #[error("image tensor has shape {shape:?}: expected [C, H, W] with C in 1..=4")]
    ImageShape { shape: Vec<i64> },

    #[error("unsupported image bit depth {0}: expected 8 or 16")]
    BitDepth(u8),

    /// A c10d collective or the rendezvous failed (a rank died, a timeout,
    /// a bad torchrun variable); `op` is `setup`, `init`, `all_reduce`,
    /// `broadcast` or `barrier`.
    #[error("distributed {op} failed (rank {rank} of {world_size}): {reason}")]
    Distributed {
        op: &'static str,
        rank: usize,
        world_size: usize,
        reason: String,
    },

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `tensor` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
