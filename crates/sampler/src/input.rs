//! Images given to a trained model (editing, inpainting, denoising,
//! interpolation): decoded and preprocessed as the model's training data
//! was, into `[C, H, W]` tensors in [-1, 1] of the model's size.
//!
//! The preprocessing is the run's (`run.json` key `preprocess`, without its
//! random parts), with what it leaves open filled in from the U-Net: a
//! missing `resolution` becomes the model's `sample_size` (resize of the
//! shorter side, center crop) and missing `channels` its `in_channels`
//! (grey <-> RGB <-> RGBA). An image that cannot be brought to the model's
//! shape is an error naming the file, its size and the size expected.

use std::path::Path;

use data_pipeline::preprocess::{Filter, Preprocess};
use tch::Tensor;

use crate::{Error, Result};

/// How to turn image files into model inputs.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// `[C, H, W]` of the model's samples.
    pub chw: [i64; 3],
    /// The preprocessing applied (deterministic).
    pub preprocess: Preprocess,
}

impl InputSpec {
    /// For a model of `chw` trained with `saved` preprocessing (`None`: no
    /// run.json). Errors when the saved preprocessing contradicts the model.
    pub fn new(chw: [i64; 3], saved: Option<&Preprocess>) -> Result<Self> {
        let [c, h, w] = chw;
        let mut p = saved.map(Preprocess::deterministic).unwrap_or_default();
        let model_error = |reason: String| Error::Unsupported(format!("run.json: {reason}"));
        match p.resolution {
            Some(r) if (i64::from(r), i64::from(r)) != (h, w) => {
                return Err(model_error(format!(
                    "preprocess.resolution = {r} but the model's sample_size is {h}x{w}"
                )))
            }
            None if h == w => p.resolution = u32::try_from(h).ok(),
            _ => {}
        }
        match p.channels {
            Some(k) if i64::from(k) != c => {
                return Err(model_error(format!(
                    "preprocess.channels = {k} but the model has in_channels = {c}"
                )))
            }
            None if matches!(c, 1 | 3 | 4) => p.channels = Some(c as u8),
            _ => {}
        }
        Ok(InputSpec { chw, preprocess: p })
    }

    /// Loads one image as a `[C, H, W]` tensor in [-1, 1].
    pub fn load(&self, path: &Path) -> Result<Tensor> {
        let img = tensor::image::decode(path)?;
        let (iw, ih) = (img.width(), img.height());
        let [c, h, w] = self.chw;
        let have = i64::from(img.color().channel_count());
        if self.preprocess.channels.is_none() && have != c {
            return Err(input_error(
                path,
                format!(
                    "has {have} channels but the model takes {c} and cannot convert to {c}; \
                     convert the image first"
                ),
            ));
        }
        if self.preprocess.resolution.is_none() && (i64::from(ih), i64::from(iw)) != (h, w) {
            return Err(input_error(
                path,
                format!(
                    "is {iw}x{ih} pixels but the model takes {w}x{h} (width x height), a \
                     non-square size that resizing cannot reach; resize the image first"
                ),
            ));
        }
        if (i64::from(ih), i64::from(iw)) != (h, w) {
            tracing::info!(
                path = %path.display(),
                "resizing {iw}x{ih} to {w}x{h} (shorter side, then center crop)"
            );
        }
        let chw = self.preprocess.apply_deterministic(img);
        let got = [chw.channels as i64, chw.height as i64, chw.width as i64];
        if got != self.chw {
            return Err(input_error(
                path,
                format!(
                    "became {got:?} after preprocessing but the model takes {:?}",
                    self.chw
                ),
            ));
        }
        Ok(Tensor::from_slice(&chw.data).view(got))
    }

    /// Loads a mask for the image at `image`: a file of the image's size
    /// whose white (> 50% grey) pixels are 1 (fill) and the rest 0, as a
    /// `[1, H, W]` float tensor after the image's resize and crop (nearest
    /// neighbour, so it stays binary).
    pub fn load_mask(&self, path: &Path, image: &Path) -> Result<Tensor> {
        let size_of = |p: &Path| {
            image::image_dimensions(p).map_err(|e| match e {
                image::ImageError::IoError(error) => Error::Io {
                    path: p.to_path_buf(),
                    error,
                },
                e => input_error(p, format!("cannot read: {e}")),
            })
        };
        let (mw, mh) = size_of(path)?;
        let (iw, ih) = size_of(image)?;
        if (mw, mh) != (iw, ih) {
            return Err(input_error(
                path,
                format!(
                    "the mask is {mw}x{mh} pixels but the image {} is {iw}x{ih}: they must have \
                     the same size",
                    image.display()
                ),
            ));
        }
        let spec = InputSpec {
            chw: [1, self.chw[1], self.chw[2]],
            preprocess: Preprocess {
                channels: Some(1),
                resize_filter: Filter::Nearest,
                ..self.preprocess.clone()
            },
        };
        let grey = spec.load(path)?;
        Ok(grey.gt(0.0).to_kind(tch::Kind::Float))
    }
}

fn input_error(path: &Path, reason: String) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};

    fn write(dir: &Path, name: &str, img: &DynamicImage) -> std::path::PathBuf {
        let p = dir.join(name);
        img.save(&p).unwrap();
        p
    }

    #[test]
    fn images_are_brought_to_the_model_shape_or_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let spec = InputSpec::new([1, 8, 8], None).unwrap();
        let grey = write(
            dir.path(),
            "g.png",
            &DynamicImage::ImageLuma8(GrayImage::from_fn(8, 8, |x, _| Luma([(x * 30) as u8]))),
        );
        let t = spec.load(&grey).unwrap();
        assert_eq!(t.size(), [1, 8, 8]);
        assert_eq!(t.double_value(&[0, 0, 0]), -1.0);
        // RGB and larger: converted to grey and resized.
        let rgb = write(
            dir.path(),
            "rgb.png",
            &DynamicImage::ImageRgb8(RgbImage::from_fn(16, 20, |_, _| Rgb([255, 255, 255]))),
        );
        let t = spec.load(&rgb).unwrap();
        assert_eq!(t.size(), [1, 8, 8]);
        assert!((t.mean(tch::Kind::Double).double_value(&[]) - 1.0).abs() < 1e-6);
        // Non-square model: only its exact size is accepted.
        let wide = InputSpec::new([1, 8, 16], None).unwrap();
        let e = wide.load(&grey).unwrap_err().to_string();
        assert!(
            e.contains("g.png") && e.contains("8x8") && e.contains("16x8"),
            "{e}"
        );
        // Unreadable files name the path.
        let bad = dir.path().join("bad.png");
        std::fs::write(&bad, b"nope").unwrap();
        assert!(spec.load(&bad).unwrap_err().to_string().contains("bad.png"));
        // A run whose preprocessing contradicts the model.
        let p = Preprocess {
            resolution: Some(32),
            ..Default::default()
        };
        assert!(InputSpec::new([1, 8, 8], Some(&p)).is_err());
    }

    #[test]
    fn masks_are_binary_and_must_match_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let spec = InputSpec::new([1, 4, 4], None).unwrap();
        let image = write(
            dir.path(),
            "i.png",
            &DynamicImage::ImageLuma8(GrayImage::new(8, 8)),
        );
        let mask = write(
            dir.path(),
            "m.png",
            &DynamicImage::ImageLuma8(GrayImage::from_fn(8, 8, |x, _| {
                Luma([if x >= 4 { 255 } else { 0 }])
            })),
        );
        let m = spec.load_mask(&mask, &image).unwrap();
        assert_eq!(m.size(), [1, 4, 4]);
        let v: Vec<f32> = Vec::try_from(m.flatten(0, -1)).unwrap();
        assert_eq!(&v[..4], &[0.0, 0.0, 1.0, 1.0]);
        let small = write(
            dir.path(),
            "s.png",
            &DynamicImage::ImageLuma8(GrayImage::new(4, 4)),
        );
        let e = spec.load_mask(&small, &image).unwrap_err().to_string();
        assert!(
            e.contains("s.png") && e.contains("4x4") && e.contains("8x8"),
            "{e}"
        );
        let missing = dir.path().join("missing.png");
        let e = spec.load_mask(&missing, &image).unwrap_err().to_string();
        assert_eq!(e, format!("no such file: {}", missing.display()));
    }
}
