//! The error type of the `trainer` crate.

use std::path::PathBuf;

/// Everything that can stop a training run. Messages name the file, field or
/// flag at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that cannot be read or written; displayed as
    /// [`tensor::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path}: invalid training config: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("invalid setting {key}: {reason}")]
    Setting { key: String, reason: String },

    #[error("{path}: not a training checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("no checkpoint to resume from in {0}")]
    NothingToResume(PathBuf),

    #[error(
        "{count} consecutive steps had a non-finite loss or gradient (last at step {step}); \
         stopped with the last good checkpoint intact"
    )]
    Diverged { count: usize, step: u64 },

    #[error(
        "this trainer has no {0}: it was built by Trainer::for_model, which trains on the \
         batches it is given and writes nothing"
    )]
    Detached(&'static str),

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Schedule(#[from] schedule::Error),

    #[error(transparent)]
    UNet(#[from] unet::Error),

    /// Boxed: the text crate's errors are large, and every `Result` of this
    /// crate would carry their size.
    #[error(transparent)]
    Text(Box<text::Error>),

    #[error(transparent)]
    Data(#[from] data_pipeline::Error),

    #[error(transparent)]
    Sampler(#[from] sampler::Error),

    #[error(transparent)]
    Eval(#[from] eval::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `trainer` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<text::Error> for Error {
    fn from(e: text::Error) -> Self {
        Error::Text(Box::new(e))
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
