//! The error type of the `sampler` crate.

use std::path::PathBuf;

/// Everything that can go wrong while building a solver or sampling. Each
/// message is one line that names the value, config key, option or file at
/// fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown sampler {name:?}: expected one of {valid}")]
    UnknownSolver { name: String, valid: String },

    #[error("{steps} inference steps requested but the model was trained with {train} timesteps: expected 1..={train}")]
    TooManySteps { steps: usize, train: usize },

    #[error("0 inference steps requested: expected at least 1")]
    ZeroSteps,

    #[error("scheduler config key {key:?}: {reason}")]
    Config { key: String, reason: String },

    #[error("{0}")]
    Unsupported(String),

    #[error("{0}")]
    Shape(String),

    #[error("class labels: {0}")]
    Labels(String),

    #[error("{path}: {reason}")]
    NoiseFile { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    ModelFolder { path: PathBuf, reason: String },

    #[error("step: {0}")]
    Step(String),

    #[error("{path}: {reason}")]
    Output { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },

    /// A file or folder that cannot be read or written; displayed as
    /// [`tensor::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error(transparent)]
    Schedule(#[from] schedule::Error),

    #[error(transparent)]
    Unet(#[from] unet::Error),

    #[error(transparent)]
    Text(#[from] text::Error),

    #[error(transparent)]
    Vae(#[from] vae::Error),

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `sampler` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(key: &str, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
