//! Reference features: the features of a real data set and their Gaussian,
//! computed once and cached in `$LMZH_CACHE_DIR/eval/` in a safetensors file
//! named by the data source, the image count and the feature net's digest,
//! so another net or another set never reads a stale file.
//!
//! Folders are read fresh every time (their content may change under the
//! same name); the benchmark sets and the bundled digits are cached.

use std::path::PathBuf;

use data_pipeline::source::SourceSpec;
use tch::{Device, Kind, Tensor};

use crate::extractor::Extractor;
use crate::images;
use crate::metrics::{self, Gaussian, Options, Report};
use crate::{Error, Result};

/// Images per feature batch.
const BATCH: i64 = 500;

/// The real side of every comparison.
#[derive(Debug)]
pub struct Reference {
    /// The data source spec.
    pub spec: String,
    /// Features `[N, D]`, float32 on the CPU.
    pub features: Tensor,
    /// Their Gaussian (float64).
    pub gaussian: Gaussian,
    /// Where it was cached, if it was.
    pub cache_file: Option<PathBuf>,
}

/// Accepted shorthands: `fashion-mnist-test` for `fashion-mnist:test` and so on.
pub fn parse_spec(s: &str) -> Result<SourceSpec> {
    let canonical = match s {
        "fashion-mnist-test" | "fmnist-test" => "fashion-mnist:test",
        "fashion-mnist-train" | "fmnist-train" | "fmnist" => "fashion-mnist",
        "mnist-test" => "mnist:test",
        "mnist-train" => "mnist",
        "cifar10-test" => "cifar10:test",
        "cifar10-train" => "cifar10",
        other => other,
    };
    Ok(canonical.parse()?)
}

/// The default cache folder of reference features: `$LMZH_CACHE_DIR/eval`.
pub fn default_cache_dir() -> PathBuf {
    data_pipeline::source::cache_dir().join("eval")
}

/// The cache file of `spec` at `limit` images under `extractor`, in `dir`.
pub fn cache_file(
    dir: &std::path::Path,
    spec: &SourceSpec,
    limit: Option<usize>,
    extractor: &Extractor,
) -> PathBuf {
    let name: String = spec
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = limit.map_or("all".to_string(), |l| l.to_string());
    dir.join(format!(
        "{name}-{n}-{}-{}.safetensors",
        extractor.label().to_ascii_lowercase(),
        extractor.digest()
    ))
}

impl Reference {
    /// Loads the reference of `spec` (its first `limit` images, or all) from
    /// the cache folder `cache` (usually [`default_cache_dir`]), or computes
    /// and caches it; `None` neither reads nor writes a cache.
    pub fn load_or_compute(
        spec: &SourceSpec,
        limit: Option<usize>,
        extractor: &Extractor,
        cache: Option<&std::path::Path>,
    ) -> Result<Self> {
        let file = cache
            .filter(|_| !matches!(spec, SourceSpec::Folder(_)))
            .map(|dir| cache_file(dir, spec, limit, extractor));
        if let Some(file) = file.as_ref().filter(|f| f.is_file()) {
            match Self::read(file, spec) {
                Ok(r) => {
                    tracing::info!(file = %file.display(), "reference features from the cache");
                    return Ok(r);
                }
                Err(e) => tracing::warn!("ignoring the unreadable cache file: {e}"),
            }
        }
        let (resolution, channels) = input_of(extractor);
        let images = images::from_spec(spec, limit, resolution, channels)?;
        let features = extractor.features(&images, BATCH)?;
        let gaussian = Gaussian::of(&features)?;
        let mut reference = Reference {
            spec: spec.to_string(),
            features,
            gaussian,
            cache_file: None,
        };
        if let Some(file) = file {
            reference.write(&file)?;
            reference.cache_file = Some(file);
        }
        Ok(reference)
    }

    /// A reference from features computed elsewhere.
    pub fn from_features(spec: &str, features: Tensor) -> Result<Self> {
        let gaussian = Gaussian::of(&features)?;
        Ok(Reference {
            spec: spec.to_string(),
            features,
            gaussian,
            cache_file: None,
        })
    }

    /// Number of reference images.
    pub fn len(&self) -> usize {
        self.features.size()[0] as usize
    }

    /// Whether there are none (never true for a computed reference).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every metric of `sample_features` against this reference.
    pub fn compare(&self, sample_features: &Tensor, opts: &Options) -> Result<Report> {
        metrics::compute_with_gaussian(&self.gaussian, &self.features, sample_features, opts)
    }

    /// Every metric of `images` `[N, C, H, W]` in [-1, 1] against this
    /// reference, with features from `extractor`.
    pub fn evaluate(
        &self,
        extractor: &Extractor,
        images: &Tensor,
        opts: &Options,
    ) -> Result<Report> {
        let features = extractor.features(images, BATCH)?;
        self.compare(&features, opts)
    }

    fn write(&self, file: &std::path::Path) -> Result<()> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                error: source,
            })?;
        }
        let stats = self.gaussian.to_tensors();
        let mut named: Vec<(&str, &Tensor)> = vec![("features", &self.features)];
        named.extend(stats.iter().map(|(k, v)| (k.as_str(), v)));
        let meta = [("spec".to_string(), self.spec.clone())]
            .into_iter()
            .collect();
        tensor::safetensors::save(file, &named, Some(&meta))?;
        Ok(())
    }

    fn read(file: &std::path::Path, spec: &SourceSpec) -> Result<Self> {
        let (tensors, meta) = tensor::safetensors::load_with_metadata(file, Device::Cpu)?;
        let features = tensors
            .get("features")
            .ok_or_else(|| Error::BadFile {
                path: file.to_path_buf(),
                message: "no `features` tensor".into(),
            })?
            .to_kind(Kind::Float);
        if meta.get("spec").map(String::as_str) != Some(spec.to_string().as_str()) {
            return Err(Error::BadFile {
                path: file.to_path_buf(),
                message: format!("made for {:?}, not {spec}", meta.get("spec")),
            });
        }
        Ok(Reference {
            spec: spec.to_string(),
            features,
            gaussian: Gaussian::from_tensors(&tensors)?,
            cache_file: Some(file.to_path_buf()),
        })
    }
}

/// The input size and channels an extractor wants.
pub fn input_of(extractor: &Extractor) -> (u32, u8) {
    match extractor {
        Extractor::Net { net, .. } => (net.info().resolution, net.info().channels),
        Extractor::TorchScript { input, .. } => (input.resolution, input.channels),
    }
}
