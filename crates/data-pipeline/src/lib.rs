//! Datasets, preprocessing and batching for diffusion training.
//!
//! - [`source`]: where images come from: an image folder (labels from its
//!   first-level subfolders), IDX files (MNIST, Fashion-MNIST), CIFAR-10
//!   binary batches, and the bundled default set of 5,000 MNIST digits.
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

mod error;
pub mod loader;
pub mod preprocess;
mod rng;
pub mod source;

pub use error::{Error, Result};
