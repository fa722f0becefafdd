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
//! Data-parallel training reads a [`Shard`] of the same stream: with `count`
//! processes, each batch position holds a *global* batch of
//! `count * batch_size` samples, and shard `rank` takes the `rank`-th slice of
//! it. [`Position`]s stay global (identical on every rank), so a run resumes
//! with any number of processes, and `count` shards of batch `b` together
//! read exactly what one loader with `grad_accum = count` reads in batches of
//! `b`. One shard (the default) is the plain stream, unchanged.
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
    /// For a source with captions: the probability of handing out the empty
    /// caption instead of the image's (diffusers' `proportion_empty_prompts`,
    /// for classifier-free guidance), decided per (seed, epoch, image) by
    /// [`crate::source::captions::caption_dropout`].
    pub caption_dropout: f64,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 64,
            seed: 0,
            shuffle: true,
            drop_last: true,
            prefetch: 4,
            caption_dropout: 0.0,
        }
    }
}

/// Where the stream stands: the next batch starts at sample `index` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub index: usize,
}

/// Which slice of each global batch this loader yields: `rank` of `count`
/// (see the module docs). With more than one shard, a global batch that does
/// not fit in what is left of an epoch is dropped, as with `drop_last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { rank: 0, count: 1 }
    }
}

/// One batch.
#[derive(Debug)]
pub struct Batch {
    /// `[B, C, H, W]` float32 in [-1, 1], on the CPU.
    pub images: Tensor,
    /// `[B]` int64 class labels, when the source has labels.
    pub labels: Option<Tensor>,
    /// One caption per image, when the source has captions: the one chosen
    /// for this epoch ([`Dataset::caption`]), or the empty caption with
    /// probability [`LoaderConfig::caption_dropout`]
    /// ([`Dataset::training_caption`]). A pure function of (seed, epoch,
    /// image), so a resumed loader hands out the same captions.
    pub captions: Option<Vec<String>>,
    /// Dataset indices of the images.
    pub indices: Vec<usize>,
    /// Where this batch (the global batch, when sharded) started.
    pub start: Position,
    /// Where the next batch starts (save this to resume after this batch).
    pub next: Position,
}

struct Shared {
    dataset: Dataset,
    preprocess: Preprocess,
    config: LoaderConfig,
    shard: Shard,
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
        Self::sharded(dataset, preprocess, config, start, Shard::default())
    }

    /// [`Self::new`] for shard `shard.rank` of `shard.count` data-parallel
    /// processes: `config.batch_size` is the per-process batch.
    pub fn sharded(
        dataset: Dataset,
        preprocess: Preprocess,
        config: LoaderConfig,
        start: Position,
        shard: Shard,
    ) -> Result<Self> {
        preprocess.validate()?;
        if shard.count == 0 || shard.rank >= shard.count {
            return Err(Error::Loader(format!(
                "shard {} of {} does not exist",
                shard.rank, shard.count
            )));
        }
        if config.batch_size == 0 {
            return Err(Error::Loader("batch_size must be at least 1".into()));
        }
        if config.prefetch == 0 {
            return Err(Error::Loader("prefetch must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&config.caption_dropout) {
            return Err(Error::Loader(format!(
                "caption_dropout {}: expected a probability in [0, 1]",
                config.caption_dropout
            )));
        }
        let n = dataset.len();
        if n == 0 {
            return Err(Error::Loader(format!("{} has no images", dataset.spec)));
        }
        if (config.drop_last || shard.count > 1) && n < config.batch_size * shard.count {
            return Err(Error::Loader(format!(
                "{} has {n} images, fewer than one batch of {}{}; lower batch_size",
                dataset.spec,
                config.batch_size * shard.count,
                if shard.count > 1 {
                    format!(" ({} per process x {})", config.batch_size, shard.count)
                } else {
                    String::new()
                }
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
            shard,
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

    /// Batches in one epoch (global batches, when sharded).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.dataset.len(), self.shared.global_batch());
        if self.shared.drop_last() {
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
    /// Samples per batch position, all shards together.
    fn global_batch(&self) -> usize {
        self.config.batch_size * self.shard.count
    }

    /// Shards must agree on where an epoch ends, so a sharded stream drops
    /// the last, partial global batch.
    fn drop_last(&self) -> bool {
        self.config.drop_last || self.shard.count > 1
    }

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
        let b = self.global_batch();
        if pos.index >= n || (self.drop_last() && pos.index + b > n) {
            pos = Position {
                epoch: pos.epoch + 1,
                index: 0,
            };
        }
        let end = (pos.index + b).min(n);
        let order = self.permutation(pos.epoch);
        // This shard's slice of the global batch (all of it for one shard).
        let own = self.config.batch_size;
        let from = pos.index + self.shard.rank * own;
        let to = if self.shard.count == 1 {
            end
        } else {
            (from + own).min(end)
        };
        let positions: Vec<usize> = (from..to).collect();
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
        let captions = self.dataset.has_captions().then(|| {
            indices
                .iter()
                .map(|&i| {
                    self.dataset
                        .training_caption(
                            i,
                            pos.epoch,
                            self.config.seed,
                            self.config.caption_dropout,
                        )
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        });
        let next = if end >= n || (self.drop_last() && end + b > n) {
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
            captions,
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

#[cfg(test)]
mod shard_tests {
    use super::*;
    use crate::preprocess::Crop;
    use crate::source::{OpenOptions, SourceSpec};

    fn loader(batch_size: usize, start: Position, shard: Shard) -> Result<DataLoader> {
        let dataset = SourceSpec::Digits.open(&OpenOptions::default())?;
        let preprocess = Preprocess {
            resolution: Some(12),
            crop: Crop::Random,
            random_flip: true,
            ..Default::default()
        };
        let config = LoaderConfig {
            batch_size,
            seed: 3,
            ..Default::default()
        };
        DataLoader::sharded(dataset, preprocess, config, start, shard)
    }

    fn bits(b: &Batch) -> Vec<u32> {
        Vec::<f32>::try_from(b.images.flatten(0, -1))
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn shards_together_read_the_plain_stream() {
        // Start near the end of epoch 0 so the global batch crosses into epoch 1:
        // 5000 images, global batches of 12 from index 4980: 4980..4992, then
        // 4992..5004 does not fit and epoch 1 starts.
        let start = Position {
            epoch: 0,
            index: 4980,
        };
        let mut plain = loader(4, start, Shard::default()).unwrap();
        let mut shards: Vec<DataLoader> = (0..3)
            .map(|rank| loader(4, start, Shard { rank, count: 3 }).unwrap())
            .collect();
        for step in 0..3 {
            let parts: Vec<Batch> = shards.iter_mut().map(|l| l.next_batch().unwrap()).collect();
            let mut want = Vec::new();
            for _ in 0..3 {
                want.push(plain.next_batch().unwrap());
            }
            if step == 0 {
                // The plain stream has 2 more batches in epoch 0 that the shards drop.
                assert_eq!(
                    want[2].next,
                    Position {
                        epoch: 0,
                        index: 4992
                    }
                );
                plain = loader(4, Position { epoch: 1, index: 0 }, Shard::default()).unwrap();
            }
            for (p, w) in parts.iter().zip(&want) {
                assert_eq!(p.indices, w.indices);
                assert_eq!(bits(p), bits(w));
            }
            let next = parts[0].next;
            assert!(parts
                .iter()
                .all(|p| p.next == next && p.start == parts[0].start));
            if step > 0 {
                assert_eq!(next, want[2].next);
            }
        }
        assert_eq!(
            shards[0].position(),
            Position {
                epoch: 1,
                index: 24
            }
        );
        assert_eq!(shards[0].batches_per_epoch(), 5000 / 12);
    }

    #[test]
    fn bad_shards_are_refused() {
        let err = loader(4, Position::default(), Shard { rank: 2, count: 2 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("shard 2 of 2"), "{err}");
        let err = loader(2000, Position::default(), Shard { rank: 0, count: 3 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("6000 (2000 per process x 3)"), "{err}");
    }
}
