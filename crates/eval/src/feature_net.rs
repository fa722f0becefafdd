//! The feature network: a small CNN classifier for grey 28x28 images whose
//! penultimate layer gives the features the metrics are computed on.
//!
//! ```text
//! [N,1,28,28] -> conv3x3(32) BN ReLU -> conv3x3(32) BN ReLU -> maxpool2
//!             -> conv3x3(64) BN ReLU -> conv3x3(64) BN ReLU -> maxpool2
//!             -> adaptive avgpool 3x3 -> flatten(576) -> linear(128)  = features
//!             -> ReLU -> dropout -> linear(num_classes)               = logits
//! ```
//!
//! The features are the pre-activation output of the 128-wide layer (closer
//! to Gaussian than after a ReLU, which matters for the Frechet distance).
//! About 140 k parameters, 0.56 MB as float32 safetensors. A net file keeps
//! its [`FeatureNetInfo`] (name, data, test accuracy, the command that made
//! it) in the safetensors metadata under `lmzh_feature_net`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Metadata key holding the JSON of [`FeatureNetInfo`].
const META_KEY: &str = "lmzh_feature_net";

/// What a feature net is and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureNetInfo {
    /// Short name used in metric labels: `FD-<name>`, e.g. `FMNIST`.
    pub name: String,
    /// The data source it was trained on (a `data-pipeline` source spec).
    pub dataset: String,
    /// Input side length; other sizes are resized to it.
    pub resolution: u32,
    /// Input channels (1 = grey).
    pub channels: u8,
    /// Number of classes of the classifier head.
    pub num_classes: usize,
    /// Width of the feature layer.
    pub feature_dim: usize,
    /// Accuracy on the held-out split, when measured.
    pub test_accuracy: Option<f64>,
    /// The held-out split that accuracy was measured on.
    pub test_split: Option<String>,
    /// Seed of the training run.
    pub seed: u64,
    /// Training epochs.
    pub epochs: usize,
    /// The command that made the file.
    pub command: String,
}

impl FeatureNetInfo {
    /// The architecture defaults for `name`, trained on `dataset`.
    pub fn new(name: &str, dataset: &str, num_classes: usize) -> Self {
        FeatureNetInfo {
            name: name.to_string(),
            dataset: dataset.to_string(),
            resolution: 28,
            channels: 1,
            num_classes,
            feature_dim: 128,
            test_accuracy: None,
            test_split: None,
            seed: 0,
            epochs: 0,
            command: String::new(),
        }
    }
}

#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    fn new(vs: nn::Path<'_>, cin: i64, cout: i64) -> Self {
        let cfg = nn::ConvConfig {
            padding: 1,
            bias: false,
            ..Default::default()
        };
        ConvBn {
            conv: nn::conv2d(&vs / "conv", cin, cout, 3, cfg),
            bn: nn::batch_norm2d(&vs / "bn", cout, Default::default()),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&x.apply(&self.conv), train).relu()
    }
}

/// The feature network with its weights.
#[derive(Debug)]
pub struct FeatureNet {
    vs: nn::VarStore,
    blocks: Vec<ConvBn>,
    fc1: nn::Linear,
    fc2: nn::Linear,
    info: FeatureNetInfo,
}

/// The spatial size the last feature map is pooled to.
const POOL: i64 = 3;

impl FeatureNet {
    /// A freshly initialised net (libtorch's default initialisation, drawn
    /// from the global generator: seed it first for reproducible weights).
    pub fn new(info: FeatureNetInfo, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let c = i64::from(info.channels);
        let blocks = vec![
            ConvBn::new(&root / "block1", c, 32),
            ConvBn::new(&root / "block2", 32, 32),
            ConvBn::new(&root / "block3", 32, 64),
            ConvBn::new(&root / "block4", 64, 64),
        ];
        let d = info.feature_dim as i64;
        let fc1 = nn::linear(&root / "fc1", 64 * POOL * POOL, d, Default::default());
        let fc2 = nn::linear(
            &root / "fc2",
            d,
            info.num_classes as i64,
            Default::default(),
        );
        FeatureNet {
            vs,
            blocks,
            fc1,
            fc2,
            info,
        }
    }

    /// What this net is.
    pub fn info(&self) -> &FeatureNetInfo {
        &self.info
    }

    /// Records training results in the info saved with the weights.
    pub fn set_info(&mut self, info: FeatureNetInfo) {
        self.info = info;
    }

    /// The variables, for an optimiser.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Features `[N, feature_dim]` and logits `[N, num_classes]` of images
    /// `[N, C, resolution, resolution]` in [-1, 1].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for (i, block) in self.blocks.iter().enumerate() {
            h = block.forward_t(&h, train);
            if i % 2 == 1 {
                h = h.max_pool2d_default(2);
            }
        }
        let h = h.adaptive_avg_pool2d([POOL, POOL]).flatten(1, -1);
        let features = h.apply(&self.fc1);
        let logits = features.relu().dropout(0.3, train).apply(&self.fc2);
        (features, logits)
    }

    /// Saves weights and info to a safetensors file, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let vars = self.vs.variables();
        let mut named: Vec<(String, Tensor)> = vars.into_iter().collect();
        // BatchNorm running statistics are buffers tch keeps as variables too.
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let refs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let json = serde_json::to_string(&self.info).expect("info serialises");
        let meta = [(META_KEY.to_string(), json)].into_iter().collect();
        tensor::safetensors::save(path, &refs, Some(&meta))?;
        Ok(())
    }

    /// Loads a net saved by [`FeatureNet::save`].
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        Self::from_bytes(&bytes, path, device)
    }

    /// Loads a net from the bytes of a safetensors file; `origin` names it
    /// in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path, device: Device) -> Result<Self> {
        let bad = |message: String| Error::BadFile {
            path: origin.to_path_buf(),
            message,
        };
        let (tensors, meta) =
            tensor::safetensors::load_bytes_with_metadata(bytes, origin, Device::Cpu)?;
        let json = meta.get(META_KEY).ok_or_else(|| {
            bad(format!(
                "no `{META_KEY}` metadata: not a feature net made by `lmzh eval train-features`"
            ))
        })?;
        let info: FeatureNetInfo =
            serde_json::from_str(json).map_err(|e| bad(format!("{META_KEY}: {e}")))?;
        let net = FeatureNet::new(info, device);
        let mut vars = net.vs.variables();
        for (name, var) in vars.iter_mut() {
            let src = tensors
                .get(name)
                .ok_or_else(|| bad(format!("missing tensor {name:?}")))?;
            if src.size() != var.size() {
                return Err(bad(format!(
                    "tensor {name:?} has shape {:?}, expected {:?}",
                    src.size(),
                    var.size()
                )));
            }
            tch::no_grad(|| var.copy_(&src.to_kind(var.kind())));
        }
        if tensors.len() != vars.len() {
            return Err(bad(format!(
                "{} tensors, expected {}",
                tensors.len(),
                vars.len()
            )));
        }
        Ok(net)
    }

    /// Features of a batch in evaluation mode, without gradients, resized
    /// and channel-converted to the net's input as needed.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let x = fit_input(images, i64::from(self.info.channels), self.info.resolution)?;
        Ok(tch::no_grad(|| self.forward_t(&x, false).0))
    }
}

/// Converts `[N, C, H, W]` in [-1, 1] to `channels` (grey = channel mean;
/// grey to RGB repeats) and `resolution` (bilinear with antialiasing).
pub fn fit_input(images: &Tensor, channels: i64, resolution: u32) -> Result<Tensor> {
    let size = images.size();
    if size.len() != 4 {
        return Err(Error::Features(format!(
            "images of shape {size:?}: expected [N, C, H, W]"
        )));
    }
    let c = size[1];
    let x = images.to_kind(Kind::Float);
    let x = match (c, channels) {
        (a, b) if a == b => x,
        (3 | 4, 1) => x.narrow(1, 0, 3).mean_dim(1, true, Kind::Float),
        (2, 1) => x.narrow(1, 0, 1),
        (1, 3) => x.repeat([1, 3, 1, 1]),
        (4, 3) => x.narrow(1, 0, 3),
        _ => {
            return Err(Error::Features(format!(
                "images with {c} channels cannot be fed to a feature net for {channels}"
            )))
        }
    };
    let r = i64::from(resolution);
    if size[2] == r && size[3] == r {
        return Ok(x);
    }
    Ok(x.f_internal_upsample_bilinear2d_aa([r, r], false, None, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_a_save_load_round_trip() {
        tch::manual_seed(0);
        let net = FeatureNet::new(FeatureNetInfo::new("T", "digits", 10), Device::Cpu);
        let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2 - 1;
        let (f, l) = net.forward_t(&x, false);
        assert_eq!(f.size(), [3, 128]);
        assert_eq!(l.size(), [3, 10]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.safetensors");
        net.save(&path).unwrap();
        let back = FeatureNet::load(&path, Device::Cpu).unwrap();
        assert_eq!(back.info(), net.info());
        let f2 = back.features(&x).unwrap();
        assert_eq!(f2.size(), [3, 128]);
        assert!(f.allclose(&f2, 0.0, 0.0, false));
    }

    #[test]
    fn other_sizes_and_channels_are_fitted() {
        let x = Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(fit_input(&x, 1, 28).unwrap().size(), [2, 1, 28, 28]);
        let bad = Tensor::zeros([2, 5, 28, 28], (Kind::Float, Device::Cpu));
        assert!(fit_input(&bad, 1, 28).is_err());
        assert!(fit_input(&Tensor::zeros([28, 28], (Kind::Float, Device::Cpu)), 1, 28).is_err());
    }

    #[test]
    fn a_file_without_info_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.safetensors");
        let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        tensor::safetensors::save(&path, &[("x", &t)], None).unwrap();
        let err = FeatureNet::load(&path, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other.safetensors") && err.contains("train-features"),
            "{err}"
        );
    }
}
