//! Datasets, preprocessing and batching for diffusion training.
//!
//! - [`source`]: where images come from: an image folder (labels from its
//!   first-level subfolders, captions from a metadata file or `.txt`
//!   sidecars), IDX files (MNIST, Fashion-MNIST), CIFAR-10 binary batches,
//!   and the bundled default set of 5,000 MNIST digits.
//! - [`preprocess`]: resize, crop, flip, channel conversion and scaling to
//!   [-1, 1], seeded per sample; its config is saved with a run.
//! - [`loader`]: seeded per-epoch shuffling, parallel decode and augment,
//!   a bounded prefetch queue, and a resumable position for exact resume.
//!
//! ```no_run
//! use data_pipeline::{loader::{DataLoader, LoaderConfig, Position}, preprocess::Preprocess, source::SourceSpec};
//! let dataset = "digits".parse::<SourceSpec>()?.open(&Default::default())?;
//! let mut loader = DataLoader::new(dataset, Preprocess::default(), LoaderConfig::default(), Position::default())?;
//! let batch = loader.next_batch()?; // images [64, 1, 28, 28] in [-1, 1], labels [64]
//! # Ok::<(), data_pipeline::Error>(())
//! ```
//!
//! # Captioned images
//!
//! For text-to-image training an image folder carries captions as Hugging
//! Face `datasets`' imagefolder does (a `metadata.jsonl` or `metadata.csv`
//! with a `file_name` column and a caption column, `text` unless
//! [`source::CaptionOptions::caption_column`] names another) or as kohya does
//! (a `.txt` file beside each image). A caption may be a list of captions;
//! one is picked per epoch, reproducibly. Details and every check:
//! [`source::captions`].
//!
//! ```text
//! pets/
//!   metadata.jsonl    {"file_name": "cat/001.png", "text": "a tabby cat asleep"}
//!                     {"file_name": "dog/001.png", "text": ["a dog", "a puppy in snow"]}
//!   cat/001.png       (subfolders are class labels, as without captions)
//!   dog/001.png
//! ```
//!
//! ```no_run
//! use data_pipeline::source::{CaptionOptions, OpenOptions, SourceSpec};
//! let strict = OpenOptions { strict: true, ..Default::default() };
//! let captions = CaptionOptions { enabled: Some(true), ..Default::default() };
//! let dataset = SourceSpec::Folder("pets".into()).open_with_captions(&strict, &captions)?;
//! let (epoch, seed) = (0, 42);
//! for i in 0..dataset.len() {
//!     // the empty caption 10% of the time, for classifier-free guidance
//!     let caption = dataset.training_caption(i, epoch, seed, 0.1).unwrap_or("");
//!     println!("{}: {caption}", dataset.describe(i));
//! }
//! # Ok::<(), data_pipeline::Error>(())
//! ```

mod error;
pub mod loader;
pub mod preprocess;
mod rng;
pub mod source;

pub use error::{Error, Result};
