//! The error type of the `data-pipeline` crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading or batching data. Messages
/// name the file, folder or field at fault and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder that cannot be read or written; displayed as
    /// [`tensor::io_error::describe`] words it (`no such file: PATH`).
    #[error("{}", tensor::io_error::describe(path, error))]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    #[error("{path}: not a valid {format} file: {reason}")]
    Format {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },

    #[error("{path}: no images found (looked for PNG, JPEG, BMP, TIFF, WebP, recursively)")]
    EmptyFolder { path: PathBuf },

    #[error("{path}: label folder contains no images; remove it or add images")]
    EmptyLabelFolder { path: PathBuf },

    #[error(
        "{path}: images directly in the root of a folder with label subfolders; move them into a \
         subfolder"
    )]
    MixedLayout { path: PathBuf },

    #[error(
        "images have different sizes ({first}: {first_size:?}, {other}: {other_size:?}) and no \
         resize was asked for; set a resolution"
    )]
    MixedSizes {
        first: PathBuf,
        first_size: (u32, u32),
        other: PathBuf,
        other_size: (u32, u32),
    },

    #[error("{path}: cannot read image: {reason}")]
    BadImage { path: PathBuf, reason: String },

    #[error("{count} unreadable image(s) and --strict is on; first: {first}")]
    Strict { count: usize, first: String },

    #[error("invalid data source {spec:?}: {reason}")]
    Spec { spec: String, reason: String },

    /// A problem with an image folder's captions: a metadata file (with the
    /// 1-based line of the row), a sidecar `.txt` file, or an image without
    /// a caption. See [`crate::source::captions`].
    #[error(
        "{}{}: {reason}",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default()
    )]
    Caption {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },

    #[error("invalid preprocessing: {0}")]
    Preprocess(String),

    #[error("invalid loader setting: {0}")]
    Loader(String),

    #[error("the data loader's worker thread stopped: {0}")]
    Worker(String),

    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias of the `data-pipeline` crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}
