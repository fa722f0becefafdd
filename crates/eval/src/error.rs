//! The error type of the `eval` crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the file,
/// field or value at fault and what was expected (the command line names
/// its flags instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Feature sets whose shapes do not fit the metric.
    #[error("features: {0}")]
    Features(String),

    /// An invalid metric parameter (k, subset size, ...).
    #[error("{name} = {value}: {expected}")]
    Parameter {
        name: &'static str,
        value: String,
        expected: String,
    },

    /// A file that exists but is not what was expected.
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },

    /// A file or folder that cannot be read or written; displayed as
    /// [`tensor::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Drawing samples to evaluate failed (the sampler's own error, in words).
    #[error("sampling: {0}")]
    Sampling(String),

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Data(#[from] data_pipeline::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `eval` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
