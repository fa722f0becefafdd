//! Getting image sets into one `[N, C, H, W]` tensor in [-1, 1]: a data
//! source (reference sets and real-data baselines), a folder of sample files
//! (what `lmzh sample --out DIR` writes), or a safetensors file of a batch.
//! Plus the two degradations of the baseline table: Gaussian noise and blur.

use std::path::{Path, PathBuf};

use data_pipeline::preprocess::Preprocess;
use data_pipeline::source::{Dataset, OpenOptions, SourceSpec};
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Image file extensions read from a samples folder.
const IMAGE_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff", "webp"];

/// Images `indices` of a dataset, `resolution`-square with `channels`
/// channels, stacked on the CPU, with their labels when the set has them.
pub fn from_dataset(
    ds: &Dataset,
    indices: &[usize],
    resolution: u32,
    channels: u8,
) -> Result<(Tensor, Option<Tensor>)> {
    let pre = Preprocess {
        resolution: Some(resolution),
        channels: Some(channels),
        ..Preprocess::default()
    };
    let r = resolution as usize;
    let per = usize::from(channels) * r * r;
    let mut data = Vec::with_capacity(indices.len() * per);
    for &i in indices {
        let chw = pre.apply_deterministic(ds.image(i)?);
        data.extend_from_slice(&chw.data);
    }
    let n = indices.len() as i64;
    let c = i64::from(channels);
    let images = Tensor::from_slice(&data).view([n, c, r as i64, r as i64]);
    let labels = ds.has_labels().then(|| {
        let l: Vec<i64> = indices.iter().map(|&i| ds.label(i).unwrap_or(-1)).collect();
        Tensor::from_slice(&l)
    });
    Ok((images, labels))
}

/// Every image of a source spec (at most `limit`, the first ones).
pub fn from_spec(
    spec: &SourceSpec,
    limit: Option<usize>,
    resolution: u32,
    channels: u8,
) -> Result<Tensor> {
    let ds = spec.open(&OpenOptions::default())?;
    let n = limit.map_or(ds.len(), |l| l.min(ds.len()));
    let indices: Vec<usize> = (0..n).collect();
    Ok(from_dataset(&ds, &indices, resolution, channels)?.0)
}

/// The image files of a samples folder, sorted by name. Grids (files whose
/// name starts with `grid`, as `lmzh sample` writes beside the images) are
/// left out.
pub fn sample_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        error: source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_file()
            && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
            && !name.starts_with("grid")
        {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::BadFile {
            path: dir.to_path_buf(),
            message: format!(
                "no image files ({}) in this folder (grid*.png are skipped)",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    Ok(files)
}

/// Loads samples: a folder of image files, a `.safetensors` file holding one
/// `[N, C, H, W]` tensor in [-1, 1] (named `images`, or its only tensor), or
/// any data source spec (`fashion-mnist:test`, `idx:...`, `folder:...`).
pub fn load_samples(
    what: &str,
    limit: Option<usize>,
    resolution: u32,
    channels: u8,
) -> Result<Tensor> {
    let path = Path::new(what);
    if path.is_dir() {
        let mut files = sample_files(path)?;
        if let Some(l) = limit {
            files.truncate(l);
        }
        let mut batch = Vec::with_capacity(files.len());
        let pre = Preprocess {
            resolution: Some(resolution),
            channels: Some(channels),
            ..Preprocess::default()
        };
        for f in &files {
            let img = tensor::image::decode(f)?;
            let chw = pre.apply_deterministic(img);
            batch.push(Tensor::from_slice(&chw.data).view([
                chw.channels as i64,
                chw.height as i64,
                chw.width as i64,
            ]));
        }
        return Ok(Tensor::stack(&batch, 0));
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        let tensors = tensor::safetensors::load(path, Device::Cpu)?;
        let t = match tensors.get("images") {
            Some(t) => t.shallow_clone(),
            None if tensors.len() == 1 => tensors.values().next().unwrap().shallow_clone(),
            None => {
                return Err(Error::BadFile {
                    path: path.to_path_buf(),
                    message: format!(
                        "{} tensors and none named `images`: expected one [N, C, H, W] batch",
                        tensors.len()
                    ),
                })
            }
        };
        if t.dim() != 4 {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                message: format!(
                    "tensor of shape {:?}: expected [N, C, H, W] in [-1, 1]",
                    t.size()
                ),
            });
        }
        let t = t.to_kind(Kind::Float);
        let t = match limit {
            Some(l) if (l as i64) < t.size()[0] => t.narrow(0, 0, l as i64),
            _ => t,
        };
        return crate::feature_net::fit_input(&t, i64::from(channels), resolution);
    }
    let spec: SourceSpec = what.parse()?;
    from_spec(&spec, limit, resolution, channels)
}

/// A degradation of real images, for baselines and sanity checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Degrade {
    /// Add Gaussian noise of this standard deviation in [0, 1] pixel units,
    /// then clip.
    Noise(f64),
    /// Gaussian blur with this standard deviation in pixels.
    Blur(f64),
}

impl std::str::FromStr for Degrade {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::Parameter {
            name: "degrade",
            value: s.to_string(),
            expected: "`noise=STD` (pixel units, 0..1) or `blur=SIGMA` (pixels), STD/SIGMA >= 0"
                .to_string(),
        };
        let (kind, value) = s.split_once('=').ok_or_else(bad)?;
        let v: f64 = value.trim().parse().map_err(|_| bad())?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(bad());
        }
        match kind.trim() {
            "noise" => Ok(Degrade::Noise(v)),
            "blur" => Ok(Degrade::Blur(v)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Degrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degrade::Noise(s) => write!(f, "noise={s}"),
            Degrade::Blur(s) => write!(f, "blur={s}"),
        }
    }
}

impl Degrade {
    /// Applies the degradation to `[N, C, H, W]` images in [-1, 1]; the noise
    /// is drawn from libtorch's global generator, reseeded with `seed`.
    pub fn apply(&self, images: &Tensor, seed: u64) -> Tensor {
        match *self {
            Degrade::Noise(std) => {
                tch::manual_seed(seed as i64);
                let noise = images.randn_like() * (2.0 * std);
                (images + noise).clamp(-1.0, 1.0)
            }
            Degrade::Blur(sigma) => gaussian_blur(images, sigma),
        }
    }
}

/// Separable Gaussian blur with reflect padding, kernel radius 3 sigma.
pub fn gaussian_blur(images: &Tensor, sigma: f64) -> Tensor {
    if sigma <= 0.0 {
        return images.shallow_clone();
    }
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let xs: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let sum: f32 = xs.iter().sum();
    let k = Tensor::from_slice(&xs.iter().map(|v| v / sum).collect::<Vec<_>>())
        .to_device(images.device());
    let c = images.size()[1];
    let len = 2 * radius + 1;
    let kh = k.view([1, 1, 1, len]).repeat([c, 1, 1, 1]);
    let kv = k.view([1, 1, len, 1]).repeat([c, 1, 1, 1]);
    let (h, w) = (images.size()[2], images.size()[3]);
    let pad = radius.min(h - 1).min(w - 1);
    let x =
        images
            .pad([pad, pad, pad, pad], "reflect", None)
            .conv2d(&kh, None::<Tensor>, 1, 0, 1, c);
    let x = x.conv2d(&kv, None::<Tensor>, 1, 0, 1, c);
    // When the image is smaller than the kernel, crop back to the input size.
    let (xh, xw) = (x.size()[2], x.size()[3]);
    x.narrow(2, (xh - h) / 2, h).narrow(3, (xw - w) / 2, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degrade_parses_and_names_the_flag() {
        assert_eq!("noise=0.1".parse::<Degrade>().unwrap(), Degrade::Noise(0.1));
        assert_eq!("blur=1.5".parse::<Degrade>().unwrap(), Degrade::Blur(1.5));
        let err = "smear=1".parse::<Degrade>().unwrap_err().to_string();
        assert!(err.contains("degrade ="), "{err}");
        assert!("noise=-1".parse::<Degrade>().is_err());
    }

    #[test]
    fn blur_keeps_shape_and_mean_and_smooths() {
        tch::manual_seed(1);
        let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2 - 1;
        let y = gaussian_blur(&x, 1.0);
        assert_eq!(y.size(), x.size());
        let mean_diff = (x.mean(Kind::Float) - y.mean(Kind::Float))
            .abs()
            .double_value(&[]);
        assert!(mean_diff < 0.02, "{mean_diff}");
        assert!(y.std(true).double_value(&[]) < 0.5 * x.std(true).double_value(&[]));
        // A constant image stays constant.
        let c = Tensor::full([1, 1, 8, 8], 0.25, (Kind::Float, Device::Cpu));
        assert!(gaussian_blur(&c, 2.0).allclose(&c, 1e-6, 1e-6, false));
    }

    #[test]
    fn a_folder_without_images_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("grid.png"), b"x").unwrap();
        let err = sample_files(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
