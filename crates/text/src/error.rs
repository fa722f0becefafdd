//! The error type of the `text` crate.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in this crate. Messages name the file, field,
/// tensor or value at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A folder that holds neither a tokenizer nor a pipeline with one, or a
    /// model folder without its files.
    #[error("{path}: {reason}")]
    NotAModelFolder { path: PathBuf, reason: String },

    /// A file or folder is missing or unreadable.
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// A JSON file that does not parse, or a field of the wrong type; `field`
    /// is the path to it (`model.merges[3]`), empty when the JSON itself is
    /// malformed.
    #[error("{path}: {}{source}", field_prefix(.field))]
    Json {
        path: PathBuf,
        field: String,
        #[source]
        source: serde_json::Error,
    },

    /// A file whose content is well-formed but not what a CLIP tokenizer or
    /// text encoder needs (a merges line that is not two tokens, a special
    /// token missing from the vocabulary, ...).
    #[error("{path}: {field}: {reason}")]
    InvalidFile {
        path: PathBuf,
        field: String,
        reason: String,
    },

    /// A config value this implementation does not support (or one
    /// transformers itself would reject).
    #[error("{path}: unsupported `{key}` = {value}: {reason}")]
    Unsupported {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },

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
    /// that claims enormous sizes costs nothing.
    #[error(
        "{config}: describes a model of {needed} weights, more than twice the {held} that \
         {weights} holds: the config does not belong to these weights (or claims sizes no model \
         has)"
    )]
    ConfigExceedsWeights {
        config: PathBuf,
        weights: PathBuf,
        needed: u128,
        held: u128,
    },

    /// An argument of a call has the wrong shape, type or value.
    #[error("invalid input: {0}")]
    Input(String),

    /// The tokenizer library failed (building the pipeline, encoding or
    /// decoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `text` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn invalid(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidFile {
            path: path.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }
}

/// Reads `path` and deserialises it as JSON, naming the field at fault in
/// the error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_json(&text, path)
}

/// Deserialises `text` as JSON; `path` names it in errors.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let source = e.into_inner();
        let malformed = source.is_syntax() || source.is_eof() || field == ".";
        Error::Json {
            path: path.to_path_buf(),
            field: if malformed { String::new() } else { field },
            source,
        }
    })
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        "not valid JSON: ".into()
    } else {
        format!("field `{field}`: ")
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
