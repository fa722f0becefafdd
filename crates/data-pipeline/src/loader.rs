//! Batching: seeded shuffling per epoch, parallel decode and augment, a
//! bounded prefetch queue, and a resumable position.
//!
//! The stream of batches is a pure function of (dataset, preprocessing,
//! seed, batch size): epoch `e` visits the images in a permutation drawn from
//! (seed, e), and the sample at position `p` of that epoch is augmented with a
//! generator seeded by (seed, e, p). A loader started at a saved
//! [`Position`] therefore yields exactly the batches that the original would
//! have yielded from there on, which is what exact resume needs.
//!
//! A background thread assembles batches (decoding and augmenting the images
//! of a batch in parallel with rayon) and keeps up to `prefetch` of them ready
//! in a bounded queue, so the training loop never waits on data.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::preprocess::{Chw, Preprocess};
use crate::rng::SplitMix64;
use crate::source::Dataset;
use crate::{Error, Result};

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Visit images in a new random order each epoch.
    pub shuffle: bool,
    /// Drop the last, smaller batch of an epoch.
    pub drop_last: bool,
    /// Batches prepared ahead of time.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            seed: 0,
            shuffle: true,
            drop_last: true,
            prefetch: 4,
        }
    }
}

/// Where the stream stands: the next batch starts at sample `index` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub index: usize,
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` float32 in [-1, 1], on the CPU.
    pub images: Tensor,
    /// `[B]` int64 class labels, when the source has labels.
    pub labels: Option<Tensor>,
    /// Dataset indices of the images.
    pub indices: Vec<usize>,
    /// Where this batch started.
    pub start: Position,
    /// Where the next batch starts (save this to resume after this batch).
    pub next: Position,
}

struct Shared {
    dataset: Dataset,
    preprocess: Preprocess,
    config: LoaderConfig,
    /// Files that failed to decode while batching, with why.
    skipped: Mutex<Vec<(PathBuf, String)>>,
}

/// An endless stream of batches over epochs.
pub struct DataLoader {
    shared: Arc<Shared>,
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    next: Position,
}

impl std::fmt::Debug for DataLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("dataset", &self.shared.dataset.spec)
            .field("config", &self.shared.config)
            .field("next", &self.next)
            .finish()
    }
}

impl DataLoader {
    /// Starts a loader at `start` (use `Position::default()` for a new run).
    pub fn new(
        dataset: Dataset,
        preprocess: Preprocess,
        config: LoaderConfig,
        start: Position,
    ) -> Result<Self> {
        preprocess.validate()?;
        if config.batch_size == 0 {
            return Err(Error::Loader("batch_size must be at least 1".into()));
        }
        if config.prefetch == 0 {
            return Err(Error::Loader("prefetch must be at least 1".into()));
        }
        let n = dataset.len();
        if n == 0 {
            return Err(Error::Loader(format!("{} has no images", dataset.spec)));
        }
        if config.drop_last && n < config.batch_size {
            return Err(Error::Loader(format!(
                "{} has {n} images, fewer than one batch of {}; lower batch_size",
                dataset.spec, config.batch_size
            )));
        }
        if start.index >= n {
            return Err(Error::Loader(format!(
                "resume position {} is past the {n} images of {}",
                start.index, dataset.spec
            )));
        }
        if preprocess.resolution.is_none() {
            dataset.check_uniform_size()?;
        }
        let shared = Arc::new(Shared {
            dataset,
            preprocess,
            config,
            skipped: Mutex::new(Vec::new()),
        });
        let (tx, rx) = sync_channel(shared.config.prefetch);
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("data-loader".into())
            .spawn(move || {
                let mut pos = start;
                loop {
                    let batch = worker_shared.batch_at(pos);
                    let next = batch.as_ref().map(|b| b.next).map_err(|_| ());
                    if tx.send(batch).is_err() {
                        return; // the loader was dropped
                    }
                    match next {
                        Ok(next) => pos = next,
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| Error::Worker(e.to_string()))?;
        Ok(DataLoader {
            shared,
            rx: Some(rx),
            worker: Some(worker),
            next: start,
        })
    }

    /// The next batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let rx = self
            .rx
            .as_ref()
            .ok_or_else(|| Error::Worker("loader is closed".into()))?;
        let batch = rx
            .recv()
            .map_err(|_| Error::Worker("the worker thread ended".into()))??;
        self.next = batch.next;
        Ok(batch)
    }

    /// Where the next batch will start: save it with a checkpoint.
    pub fn position(&self) -> Position {
        self.next
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.dataset.len(), self.shared.config.batch_size);
        if self.shared.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The dataset being read.
    pub fn dataset(&self) -> &Dataset {
        &self.shared.dataset
    }

    /// Every file skipped so far, at open time or while batching.
    pub fn skipped(&self) -> Vec<(PathBuf, String)> {
        let mut all = self.shared.dataset.skipped.clone();
        all.extend(
            self.shared
                .skipped
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
        );
        all
    }
}

impl Drop for DataLoader {
    fn drop(&mut self) {
        // Closing the receiver makes the worker's next send fail and return.
        drop(self.rx.take());
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn permutation(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        if self.config.shuffle {
            let seed = tensor::seed::derive_seed(self.config.seed, "shuffle") ^ epoch;
            SplitMix64::new(tensor::seed::derive_seed(seed, "epoch")).permutation(n)
        } else {
            (0..n).collect()
        }
    }

    fn batch_at(&self, mut pos: Position) -> Result<Batch> {
        let n = self.dataset.len();
        let b = self.config.batch_size;
        if pos.index >= n || (self.config.drop_last && pos.index + b > n) {
            pos = Position {
                epoch: pos.epoch + 1,
                index: 0,
            };
        }
        let end = (pos.index + b).min(n);
        let order = self.permutation(pos.epoch);
        let positions: Vec<usize> = (pos.index..end).collect();
        let samples: Vec<(usize, Chw)> = positions
            .par_iter()
            .map(|&p| self.sample(&order, pos.epoch, p))
            .collect::<Result<_>>()?;
        let first = &samples[0].1;
        let (c, h, w) = (first.channels, first.height, first.width);
        if let Some((i, s)) = samples
            .iter()
            .find(|(_, s)| (s.channels, s.height, s.width) != (c, h, w))
        {
            return Err(Error::Loader(format!(
                "{} is {}x{}x{} but {} is {c}x{h}x{w}; set a resolution and channels to make \
                 images uniform",
                self.dataset.describe(*i),
                s.channels,
                s.height,
                s.width,
                self.dataset.describe(samples[0].0)
            )));
        }
        let mut data = Vec::with_capacity(samples.len() * c * h * w);
        for (_, s) in &samples {
            data.extend_from_slice(&s.data);
        }
        let indices: Vec<usize> = samples.iter().map(|(i, _)| *i).collect();
        let images =
            Tensor::from_slice(&data).view([samples.len() as i64, c as i64, h as i64, w as i64]);
        let labels = self.dataset.has_labels().then(|| {
            let l: Vec<i64> = indices
                .iter()
                .map(|&i| self.dataset.label(i).unwrap_or(0))
                .collect();
            Tensor::from_slice(&l)
        });
        let next = if end >= n || (self.config.drop_last && end + b > n) {
            Position {
                epoch: pos.epoch + 1,
                index: 0,
            }
        } else {
            Position {
                epoch: pos.epoch,
                index: end,
            }
        };
        Ok(Batch {
            images,
            labels,
            indices,
            start: pos,
            next,
        })
    }

    /// Sample at position `p` of `epoch`. An image that fails to decode is
    /// replaced by the next one in the epoch's order (deterministically), and
    /// recorded; in strict mode it is an error.
    fn sample(&self, order: &[usize], epoch: u64, p: usize) -> Result<(usize, Chw)> {
        let n = order.len();
        for k in 0..n {
            let i = order[(p + k) % n];
            match self.dataset.image(i) {
                Ok(img) => {
                    let mut rng = SplitMix64::for_item(self.config.seed, epoch, p as u64);
                    return Ok((i, self.preprocess.apply(img, &mut rng)));
                }
                Err(e) if self.dataset.strict => return Err(e),
                Err(e) => {
                    tracing::warn!("skipping {e}");
                    if let Ok(mut s) = self.skipped.lock() {
                        let path = PathBuf::from(self.dataset.describe(i));
                        if !s.iter().any(|(q, _)| *q == path) {
                            s.push((path, e.to_string()));
                        }
                    }
                }
            }
        }
        Err(Error::Loader(format!(
            "no image of {} could be decoded",
            self.dataset.spec
        )))
    }
}

#[cfg(test)]
mod tests;
