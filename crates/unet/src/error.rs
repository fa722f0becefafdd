//! The error type of the `unet` crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the file, config
/// key, tensor or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value this implementation does not support (yet), or one
    /// diffusers itself would reject.
    #[error("unsupported config: `{key}` = {value}: {reason}")]
    Unsupported {
        key: String,
        value: String,
        reason: String,
    },

    /// Config values that contradict each other.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// An input of the forward pass has the wrong shape or type.
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

    /// A model folder whose config describes a model far bigger than its
    /// weights file holds: caught before the model is allocated, so a config
    /// that claims enormous channel counts costs nothing.
    #[error(
        "{config}: describes a model of at least {needed} weights, more than twice the {held} \
         that {weights} holds: the config does not belong to these weights (or claims sizes no \
         model has)"
    )]
    ConfigExceedsWeights {
        config: PathBuf,
        weights: PathBuf,
        needed: u128,
        held: u128,
    },

    /// A file or folder that cannot be read or written; displayed as
    /// [`tensor::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A config file is not valid JSON for the model's config.
    #[error("{path}: not a valid model config: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// A folder that is neither a model folder nor a pipeline folder.
    #[error("{path}: {reason}")]
    NotAModelFolder { path: PathBuf, reason: String },

    /// An unknown preset name.
    #[error("unknown preset {name:?}: expected one of {expected}")]
    UnknownPreset { name: String, expected: String },

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `unet` crate.
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

    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
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
