//! Sample-quality evaluation that works offline.
//!
//! No Inception-v3 weights can be assumed on a user's machine, so the metrics
//! are computed on the penultimate features of a small CNN classifier trained
//! on the data itself (the practice of TF-GAN's `mnist_frechet_distance`).
//! The numbers are therefore labelled with the feature net (`FD-FMNIST`,
//! `KID-FMNIST`, ...) and are not comparable with Inception FID.
//!
//! - [`metrics`]: Frechet distance, KID, precision/recall and
//!   density/coverage on two feature matrices.
//! - [`feature_net`] and [`train_net`]: the classifier and its training.
//! - [`extractor`]: bundled nets, net files, or a TorchScript module.
//! - [`reference`](mod@reference): features and statistics of a reference data set, cached.
//! - [`images`]: loading sample folders and data sets; noise and blur.
//! - [`prompts`]: prompt following of a text-to-image model trained on
//!   `captioned-digits`: are the asked digits drawn, on the asked sides,
//!   for seen and held-out pairs?
//! - `cli` (feature `cli`, on by default): `lmzh eval`, `lmzh eval
//!   train-features` and `lmzh eval prompts`.

pub mod builtin;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod extractor;
pub mod feature_net;
pub mod images;
pub mod metrics;
pub mod prompts;
pub mod reference;
pub mod train_net;

pub use error::{Error, Result};
pub use extractor::Extractor;
pub use metrics::{Options, Report};
pub use reference::Reference;
