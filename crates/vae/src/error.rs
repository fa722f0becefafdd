//! The error type of the `vae` crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the file, config
/// key, tensor or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value this implementation does not support, or one diffusers
    /// itself would reject.
    #[error("unsupported config: `{key}` = {value}: {reason}")]
    Unsupported {
        key: String,
        value: String,
        reason: String,
    },

    /// Config values that contradict each other.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// An input of encode or decode has the wrong shape or type.
    #[error("invalid input: {0}")]
    Input(String),

    /// The weights file does not match the architecture of its config.
    #[error("{path}: weights do not match the config:{}", list_mismatches(.missing, .unexpected, .mismatched))]
    WeightMismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        mismatched: Vec<String>,
    },

    /// A file or folder is missing or unreadable.
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A config file is not valid JSON for an `AutoencoderKL` config.
    #[error("{path}: not a valid AutoencoderKL config: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A folder that is neither a VAE model folder nor a pipeline folder with `vae/`.
    #[error("{path}: {reason}")]
    NotAModelFolder { path: PathBuf, reason: String },

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `vae` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn unsupported(
        key: impl Into<String>,
        value: impl std::fmt::Debug,
        reason: impl Into<String>,
    ) -> Self {
        Error::Unsupported {
            key: key.into(),
            value: format!("{value:?}"),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

/// The errors of the weight loading and saving shared with `unet` (whose
/// blocks and loader this crate reuses), as this crate's variants.
impl From<unet::Error> for Error {
    fn from(e: unet::Error) -> Self {
        match e {
            unet::Error::WeightMismatch {
                path,
                missing,
                unexpected,
                mismatched,
            } => Error::WeightMismatch {
                path,
                missing,
                unexpected,
                mismatched,
            },
            unet::Error::Unsupported { key, value, reason } => {
                Error::Unsupported { key, value, reason }
            }
            unet::Error::Io { path, error } => Error::Io { path, error },
            unet::Error::NotAModelFolder { path, reason } => {
                Error::NotAModelFolder { path, reason }
            }
            unet::Error::Input(s) => Error::Input(s),
            unet::Error::Tensor(e) => Error::Tensor(e),
            unet::Error::Torch(e) => Error::Torch(e),
            other => Error::InvalidConfig(other.to_string()),
        }
    }
}

fn list_mismatches(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    let mut out = String::new();
    for (what, names) in [
        ("missing from the file", missing),
        ("unexpected in the file", unexpected),
        ("wrong shape", mismatched),
    ] {
        if !names.is_empty() {
            out.push_str(&format!(
                "\n  {what} ({}): {}",
                names.len(),
                names.join(", ")
            ));
        }
    }
    out
}
