//! Training a [`FeatureNet`] classifier on a labelled data set, seeded and
//! reproducible: the same seed, data and thread count give the same bits.
//!
//! Held-out data: the `:test` split for the benchmark sets (Fashion-MNIST,
//! MNIST, CIFAR-10), else every 10th image (indices 9, 19, ...), which the
//! training never sees.

use data_pipeline::source::{OpenOptions, SourceSpec, Split};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

use crate::feature_net::{FeatureNet, FeatureNetInfo};
use crate::images::from_dataset;
use crate::{Error, Result};

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainNetOptions {
    /// A labelled source (its train split for the benchmark sets).
    pub data: SourceSpec,
    /// The net's name in metric labels, e.g. `FMNIST`.
    pub name: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Initial learning rate of AdamW, decayed to 0 along a cosine.
    pub learning_rate: f64,
    pub seed: u64,
    /// Train on at most this many images, evenly spaced (all by default).
    pub limit: Option<usize>,
    pub device: Device,
    /// The command line, recorded in the net's metadata.
    pub command: String,
}

impl Default for TrainNetOptions {
    fn default() -> Self {
        TrainNetOptions {
            data: SourceSpec::Digits,
            name: "DIGITS".into(),
            epochs: 5,
            batch_size: 128,
            learning_rate: 2e-3,
            seed: 0,
            limit: None,
            device: Device::Cpu,
            command: String::new(),
        }
    }
}

/// Progress of one epoch, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: usize,
    pub epochs: usize,
    pub train_loss: f64,
    pub test_accuracy: f64,
}

/// The train and held-out image sets of a source, with labels.
pub struct TrainTest {
    pub train: (Tensor, Tensor),
    pub test: (Tensor, Tensor),
    /// How the held-out set was chosen, for the record.
    pub test_split: String,
    pub num_classes: usize,
}

impl std::fmt::Debug for TrainTest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TrainTest {{ train: {}, test: {} ({}) }}",
            self.train.0.size()[0],
            self.test.0.size()[0],
            self.test_split
        )
    }
}

/// Loads the training and held-out images of `spec` at the net's input size.
pub fn load_split(
    spec: &SourceSpec,
    info: &FeatureNetInfo,
    limit: Option<usize>,
) -> Result<TrainTest> {
    let test_spec = match spec {
        SourceSpec::FashionMnist(_) => Some(SourceSpec::FashionMnist(Split::Test)),
        SourceSpec::Mnist(_) => Some(SourceSpec::Mnist(Split::Test)),
        SourceSpec::Cifar10 { dir, .. } => Some(SourceSpec::Cifar10 {
            dir: dir.clone(),
            split: Split::Test,
        }),
        _ => None,
    };
    let train_spec = match spec {
        SourceSpec::FashionMnist(_) => SourceSpec::FashionMnist(Split::Train),
        SourceSpec::Mnist(_) => SourceSpec::Mnist(Split::Train),
        SourceSpec::Cifar10 { dir, .. } => SourceSpec::Cifar10 {
            dir: dir.clone(),
            split: Split::Train,
        },
        other => other.clone(),
    };
    let ds = train_spec.open(&OpenOptions::default())?;
    if !ds.has_labels() {
        return Err(Error::Parameter {
            name: "data",
            value: spec.to_string(),
            expected: "a labelled source (IDX with labels, a benchmark set, or a folder with one \
                       sub-folder per class)"
                .into(),
        });
    }
    let num_classes = ds.class_names().len().max(2);
    let all: Vec<usize> = (0..ds.len()).collect();
    let (train_idx, test, test_split): (Vec<usize>, _, String) = match &test_spec {
        Some(t) => {
            let tds = t.open(&OpenOptions::default())?;
            let idx: Vec<usize> = (0..tds.len()).collect();
            let (x, y) = from_dataset(&tds, &idx, info.resolution, info.channels)?;
            (
                all,
                (x, y.expect("benchmark sets are labelled")),
                t.to_string(),
            )
        }
        None => {
            let (test_idx, train_idx): (Vec<usize>, Vec<usize>) =
                all.into_iter().partition(|i| i % 10 == 9);
            let (x, y) = from_dataset(&ds, &test_idx, info.resolution, info.channels)?;
            (
                train_idx,
                (x, y.expect("checked above")),
                format!("{spec}, every 10th image"),
            )
        }
    };
    // A limit takes evenly spaced images, so sets stored in class order
    // keep every class.
    let train_idx = match limit {
        Some(l) if l < train_idx.len() => {
            (0..l).map(|k| train_idx[k * train_idx.len() / l]).collect()
        }
        _ => train_idx,
    };
    if train_idx.is_empty() {
        return Err(Error::Parameter {
            name: "limit",
            value: format!("{limit:?}"),
            expected: format!("at least one training image ({spec} has none left)"),
        });
    }
    let (x, y) = from_dataset(&ds, &train_idx, info.resolution, info.channels)?;
    Ok(TrainTest {
        train: (x, y.expect("checked above")),
        test,
        test_split,
        num_classes,
    })
}

/// Trains a feature net; `on_epoch` sees each epoch's loss and accuracy.
pub fn train(opts: &TrainNetOptions, on_epoch: &mut dyn FnMut(EpochReport)) -> Result<FeatureNet> {
    if opts.epochs == 0 || opts.batch_size == 0 {
        return Err(Error::Parameter {
            name: "epochs/batch_size",
            value: format!("{}/{}", opts.epochs, opts.batch_size),
            expected: "both at least 1".into(),
        });
    }
    let mut info = FeatureNetInfo::new(&opts.name, &opts.data.to_string(), 10);
    let data = load_split(&opts.data, &info, opts.limit)?;
    info.num_classes = data.num_classes;
    info.seed = opts.seed;
    info.epochs = opts.epochs;
    info.command = opts.command.clone();
    info.test_split = Some(data.test_split.clone());
    tracing::info!(?data, "feature net data");

    tch::manual_seed(opts.seed as i64);
    let mut net = FeatureNet::new(info.clone(), opts.device);
    let mut opt = tch::nn::AdamW {
        wd: 1e-4,
        ..Default::default()
    }
    .build(net.var_store(), opts.learning_rate)?;

    let (x, y) = &data.train;
    let n = x.size()[0];
    let bs = opts.batch_size as i64;
    let per_epoch = (n + bs - 1) / bs;
    let total = per_epoch * opts.epochs as i64;
    let mut step = 0_i64;
    for epoch in 0..opts.epochs {
        let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu));
        let mut loss_sum = Tensor::zeros([], (Kind::Float, opts.device));
        for b in 0..per_epoch {
            let len = bs.min(n - b * bs);
            let idx = order.narrow(0, b * bs, len);
            let xb = x.index_select(0, &idx).to_device(opts.device);
            let yb = y.index_select(0, &idx).to_device(opts.device);
            let (_, logits) = net.forward_t(&xb, true);
            let loss = logits.cross_entropy_for_logits(&yb);
            // Cosine decay over the whole run.
            let progress = step as f64 / total as f64;
            opt.set_lr(opts.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            opt.backward_step(&loss);
            loss_sum += loss.detach() * len;
            step += 1;
        }
        let train_loss = loss_sum.double_value(&[]) / n as f64;
        let test_accuracy = accuracy(&net, &data.test.0, &data.test.1)?;
        on_epoch(EpochReport {
            epoch: epoch + 1,
            epochs: opts.epochs,
            train_loss,
            test_accuracy,
        });
        info.test_accuracy = Some(test_accuracy);
    }
    net.set_info(info);
    Ok(net)
}

/// Classification accuracy of `net` on images with labels.
pub fn accuracy(net: &FeatureNet, images: &Tensor, labels: &Tensor) -> Result<f64> {
    let n = images.size()[0];
    if n == 0 {
        return Err(Error::Features(
            "no held-out images to measure accuracy on".into(),
        ));
    }
    let device = net.var_store().device();
    let mut correct = 0_i64;
    tch::no_grad(|| {
        for start in (0..n).step_by(1000) {
            let len = 1000.min(n - start);
            let xb = images.narrow(0, start, len).to_device(device);
            let (_, logits) = net.forward_t(&xb, false);
            let pred = logits.argmax(1, false).to_device(Device::Cpu);
            correct += pred
                .eq_tensor(&labels.narrow(0, start, len))
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
    });
    Ok(correct as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(seed: u64) -> TrainNetOptions {
        TrainNetOptions {
            epochs: 3,
            batch_size: 32,
            limit: Some(1000),
            seed,
            ..TrainNetOptions::default()
        }
    }

    #[test]
    fn training_is_reproducible_and_learns_digits() {
        tch::set_num_threads(1);
        let mut reports = Vec::new();
        let a = train(&quick(3), &mut |r| reports.push(r)).unwrap();
        let b = train(&quick(3), &mut |_| {}).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu));
        let (fa, fb) = (a.features(&x).unwrap(), b.features(&x).unwrap());
        assert!(fa.equal(&fb), "same seed, different weights");
        // 1000 images, three epochs: far above chance (10 %) on the held-out tenth.
        let acc = reports[2].test_accuracy;
        assert!(acc > 0.4, "held-out accuracy {acc}");
        assert_eq!(
            a.info().test_split.as_deref(),
            Some("digits, every 10th image")
        );
    }

    #[test]
    fn unlabelled_data_is_refused_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::GrayImage::new(8, 8);
        img.save(dir.path().join("a.png")).unwrap();
        let opts = TrainNetOptions {
            data: SourceSpec::Folder(dir.path().to_path_buf()),
            ..quick(0)
        };
        let err = train(&opts, &mut |_| {}).unwrap_err().to_string();
        assert!(err.contains("data =") && err.contains("labelled"), "{err}");
    }
}
