//! The error type of the `schedule` crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages name the value, key
/// or file at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown {what} {name:?}: expected one of {valid}")]
    UnknownName {
        what: &'static str,
        name: String,
        valid: String,
    },

    #[error("num_train_timesteps = {0}: a schedule needs at least 2 timesteps")]
    TooFewTimesteps(usize),

    #[error(
        "num_train_timesteps = {n}: more than {max} timesteps (diffusers models use 1,000 to 4,000)"
    )]
    TooManyTimesteps { n: usize, max: usize },

    #[error("{field} = {value}: expected a value in (0, 1)")]
    BetaParameter { field: &'static str, value: f64 },

    #[error("beta[{index}] = {value}: every beta must be a finite number in [0, 1]")]
    InvalidBeta { index: usize, value: f64 },

    #[error("trained_betas has {len} values but num_train_timesteps is {expected}")]
    TrainedBetasLength { len: usize, expected: usize },

    #[error("timesteps: {0}")]
    Timesteps(String),

    #[error("shape mismatch: {0}")]
    Shape(String),

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("plot: {0}")]
    Plot(String),

    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `schedule` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
