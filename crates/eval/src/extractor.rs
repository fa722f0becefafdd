//! The feature extractor the metrics run on: one of the bundled feature nets,
//! a feature net file made by `lmzh eval train-features`, or a TorchScript
//! module (an Inception-v3 export, say) for users who have one.

use std::path::{Path, PathBuf};

use data_pipeline::source::SourceSpec;
use tch::{CModule, Device, Kind, Tensor};

use crate::feature_net::{fit_input, FeatureNet};
use crate::{builtin, Error, Result};

/// Input conventions of a TorchScript feature module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchScriptInput {
    /// Side length the images are resized to (299 for Inception-v3).
    pub resolution: u32,
    /// Channels the images are converted to (3 for Inception-v3).
    pub channels: u8,
}

impl Default for TorchScriptInput {
    fn default() -> Self {
        TorchScriptInput {
            resolution: 299,
            channels: 3,
        }
    }
}

/// A feature extractor.
#[derive(Debug)]
pub enum Extractor {
    /// A [`FeatureNet`], bundled or from a file.
    Net {
        net: FeatureNet,
        /// A digest of the weight file, for cache keys.
        digest: String,
    },
    /// A TorchScript module taking `[N, C, R, R]` in [-1, 1] and returning
    /// `[N, D]` (or `[N, D, 1, 1]`) features.
    TorchScript {
        module: CModule,
        name: String,
        input: TorchScriptInput,
        device: Device,
        digest: String,
    },
}

impl Extractor {
    /// Opens `spec`: a bundled net by name (`fmnist`, `digits`), a
    /// `.safetensors` feature net, or a TorchScript file (`.pt`, `.pth`,
    /// `.ts`, `.jit`) with the input conventions `ts`.
    pub fn open(spec: &str, device: Device, ts: TorchScriptInput) -> Result<Self> {
        if let Some(bytes) = builtin::bytes(spec) {
            let origin = PathBuf::from(format!("<bundled feature net {spec}>"));
            return Ok(Extractor::Net {
                net: FeatureNet::from_bytes(bytes, &origin, device)?,
                digest: digest(bytes),
            });
        }
        let path = Path::new(spec);
        let read = || {
            std::fs::read(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                error: source,
            })
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("safetensors") => {
                let bytes = read()?;
                Ok(Extractor::Net {
                    net: FeatureNet::from_bytes(&bytes, path, device)?,
                    digest: digest(&bytes),
                })
            }
            Some("pt" | "pth" | "ts" | "jit") => {
                let bytes = read()?;
                let mut module =
                    CModule::load_on_device(path, device).map_err(|e| Error::BadFile {
                        path: path.to_path_buf(),
                        message: format!("not a loadable TorchScript module: {e}"),
                    })?;
                module.set_eval();
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("TS")
                    .to_string();
                let mut key = bytes;
                key.extend_from_slice(format!("{}x{}", ts.resolution, ts.channels).as_bytes());
                Ok(Extractor::TorchScript {
                    module,
                    name,
                    input: ts,
                    device,
                    digest: digest(&key),
                })
            }
            _ => Err(Error::Parameter {
                name: "feature_net",
                value: spec.to_string(),
                expected: format!(
                    "a bundled net ({}), a .safetensors file from `lmzh eval train-features`, or \
                     a TorchScript file (.pt)",
                    builtin::NAMES.join(", ")
                ),
            }),
        }
    }

    /// The bundled net made for a reference data source, if there is one.
    pub fn for_reference(spec: &SourceSpec, device: Device) -> Result<Self> {
        let name = builtin::for_source(spec).ok_or_else(|| Error::Parameter {
            name: "feature_net",
            value: "auto".into(),
            expected: format!(
                "a feature net for {spec}: no bundled net fits it (bundled: {}); train one with \
                 `lmzh eval train-features --data {spec} --out net.safetensors` and pass \
                 `--feature-net net.safetensors`",
                builtin::NAMES.join(", ")
            ),
        })?;
        Self::open(name, device, TorchScriptInput::default())
    }

    /// The label of the metrics, e.g. `FMNIST` in `FD-FMNIST`.
    pub fn label(&self) -> &str {
        match self {
            Extractor::Net { net, .. } => &net.info().name,
            Extractor::TorchScript { name, .. } => name,
        }
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        match self {
            Extractor::Net { net, .. } => {
                let i = net.info();
                let acc = i
                    .test_accuracy
                    .map(|a| format!(", held-out accuracy {:.2} %", 100.0 * a))
                    .unwrap_or_default();
                format!(
                    "{} (CNN trained on {}{acc}; {}-d features)",
                    i.name, i.dataset, i.feature_dim
                )
            }
            Extractor::TorchScript { name, input, .. } => format!(
                "{name} (TorchScript, {}x{}x{} input)",
                input.channels, input.resolution, input.resolution
            ),
        }
    }

    /// A digest identifying the weights (cache keys of reference features).
    pub fn digest(&self) -> &str {
        match self {
            Extractor::Net { digest, .. } | Extractor::TorchScript { digest, .. } => digest,
        }
    }

    /// Features `[N, D]` (float32, CPU) of images `[N, C, H, W]` in [-1, 1],
    /// computed `batch` images at a time.
    pub fn features(&self, images: &Tensor, batch: i64) -> Result<Tensor> {
        let n = images.size().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(Error::Features("no images to compute features of".into()));
        }
        let mut out = Vec::new();
        for start in (0..n).step_by(batch.max(1) as usize) {
            let len = batch.min(n - start);
            let chunk = images.narrow(0, start, len);
            let f = match self {
                Extractor::Net { net, .. } => {
                    net.features(&chunk.to_device(net.var_store().device()))?
                }
                Extractor::TorchScript {
                    module,
                    input,
                    device,
                    ..
                } => {
                    let x = fit_input(&chunk, i64::from(input.channels), input.resolution)?
                        .to_device(*device);
                    let f = tch::no_grad(|| module.forward_ts(&[x]))?;
                    let f = f.flatten(1, -1);
                    if f.size()[0] != len {
                        return Err(Error::Features(format!(
                            "the TorchScript module returned shape {:?} for {len} images: \
                             expected [N, D]",
                            f.size()
                        )));
                    }
                    f
                }
            };
            out.push(f.to_kind(Kind::Float).to_device(Device::Cpu));
        }
        Ok(Tensor::cat(&out, 0))
    }
}

/// FNV-1a, 64 bits, as 16 hex digits: a stable digest for cache keys (not a
/// security measure).
pub fn digest(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torchscript_module_made_here_gives_features() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny-inception.pt");
        // A stand-in for Inception: mean-pool to 4x4 and flatten, 48 features
        // for 3x8x8 input.
        let example = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let module = CModule::create_by_tracing("Tiny", "forward", &[example], &mut |xs| {
            vec![xs[0].adaptive_avg_pool2d([4, 4]).flatten(1, -1)]
        })
        .unwrap();
        module.save(&path).unwrap();
        let ts = TorchScriptInput {
            resolution: 8,
            channels: 3,
        };
        let ex = Extractor::open(path.to_str().unwrap(), Device::Cpu, ts).unwrap();
        assert_eq!(ex.label(), "tiny-inception");
        // Grey 28x28 images are converted to RGB 8x8.
        let images = Tensor::rand([5, 1, 28, 28], (Kind::Float, Device::Cpu));
        let f = ex.features(&images, 2).unwrap();
        assert_eq!(f.size(), [5, 48]);
        let expected = fit_input(&images, 3, 8)
            .unwrap()
            .adaptive_avg_pool2d([4, 4])
            .flatten(1, -1);
        assert!(f.allclose(&expected, 1e-6, 1e-6, false));
    }

    #[test]
    fn unknown_feature_nets_name_the_flag() {
        let err = Extractor::open("inception.h5", Device::Cpu, TorchScriptInput::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("feature_net"), "{err}");
        let err = Extractor::open("missing.pt", Device::Cpu, TorchScriptInput::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pt"), "{err}");
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest(b""), "cbf29ce484222325");
        assert_ne!(digest(b"a"), digest(b"b"));
    }
}
