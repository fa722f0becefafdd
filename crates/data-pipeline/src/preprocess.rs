//! Preprocessing: channel conversion, resize, crop, flip, scaling to [-1, 1].
//!
//! Applied per image in this order. Every random choice (crop offset, flip)
//! draws from a generator seeded by (seed, epoch, position in the epoch), so a
//! given sample is augmented identically on every run and after a resume,
//! whatever thread happens to process it. The config is saved with a run and
//! reapplied (without the random parts) to images given at sampling or
//! editing time.

use image::imageops::FilterType;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Resampling filter of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    #[default]
    Lanczos,
    Bilinear,
    Nearest,
}

impl Filter {
    fn image_filter(self) -> FilterType {
        match self {
            Filter::Lanczos => FilterType::Lanczos3,
            Filter::Bilinear => FilterType::Triangle,
            Filter::Nearest => FilterType::Nearest,
        }
    }
}

/// How to crop the resized image to a square of `resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    #[default]
    Center,
    Random,
}

/// The preprocessing of a run, saved with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Resize the shorter side to this, then crop a square of it. `None`
    /// keeps images as they are (they must then all have one size).
    pub resolution: Option<u32>,
    pub resize_filter: Filter,
    pub crop: Crop,
    /// Mirror left-right with probability 1/2.
    pub random_flip: bool,
    /// Convert to 1 (grey), 3 (RGB) or 4 (RGBA) channels; `None` keeps them.
    pub channels: Option<u8>,
}

/// A preprocessed image: channel-planar `[C, H, W]` floats in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Chw {
    pub data: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Preprocess {
    /// Checks the values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if self.resolution == Some(0) {
            return Err(Error::Preprocess("resolution must be at least 1".into()));
        }
        if let Some(c) = self.channels {
            if !matches!(c, 1 | 3 | 4) {
                return Err(Error::Preprocess(format!(
                    "channels = {c}: expected 1, 3 or 4"
                )));
            }
        }
        Ok(())
    }

    /// Whether any step draws random numbers.
    pub fn is_random(&self) -> bool {
        self.random_flip || (self.crop == Crop::Random && self.resolution.is_some())
    }

    /// The same preprocessing without random steps (center crop, no flip), for
    /// images given at sampling or editing time.
    pub fn deterministic(&self) -> Preprocess {
        Preprocess {
            crop: Crop::Center,
            random_flip: false,
            ..self.clone()
        }
    }

    /// Applies every step; `rng` supplies the random choices.
    pub(crate) fn apply(&self, img: DynamicImage, rng: &mut SplitMix64) -> Chw {
        // Always draw the same numbers, used or not, so streams never shift.
        let (u_x, u_y, u_flip) = (rng.unit(), rng.unit(), rng.unit());
        let img = match self.channels {
            Some(c) => convert_channels(img, c),
            None => img,
        };
        let img = match self.resolution {
            Some(_) if img.width().min(img.height()) == 0 => img,
            Some(r) => {
                let img = limit_aspect(img);
                let (w, h) = (img.width(), img.height());
                let scale = f64::from(r) / f64::from(w.min(h));
                let (nw, nh) = if w.min(h) == r {
                    (w, h)
                } else {
                    (
                        ((f64::from(w) * scale).round() as u32).max(r),
                        ((f64::from(h) * scale).round() as u32).max(r),
                    )
                };
                let img = if (nw, nh) == (w, h) {
                    img
                } else {
                    img.resize_exact(nw, nh, self.resize_filter.image_filter())
                };
                let (x, y) = match self.crop {
                    Crop::Center => ((nw - r) / 2, (nh - r) / 2),
                    Crop::Random => (
                        (u_x * f64::from(nw - r + 1)) as u32,
                        (u_y * f64::from(nh - r + 1)) as u32,
                    ),
                };
                if (nw, nh) == (r, r) {
                    img
                } else {
                    img.crop_imm(x, y, r, r)
                }
            }
            None => img,
        };
        let img = if self.random_flip && u_flip < 0.5 {
            img.fliph()
        } else {
            img
        };
        to_chw(&img)
    }

    /// Applies the deterministic steps to one image (sampling/editing time).
    pub fn apply_deterministic(&self, img: DynamicImage) -> Chw {
        self.deterministic().apply(img, &mut SplitMix64::new(0))
    }
}

/// The longest side the resize sees, in multiples of the shorter one.
pub const MAX_ASPECT: u32 = 16;

/// Crops an image longer than [`MAX_ASPECT`] times its shorter side to
/// that, around its center. The center crop after the resize keeps the
/// same pixels, and the resize stays bounded: a 1 x 100,000,000 image
/// (a PNG of a few hundred kilobytes) would otherwise become 32 x
/// 3,200,000,000 at resolution 32.
fn limit_aspect(img: DynamicImage) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let long = w.min(h).saturating_mul(MAX_ASPECT);
    if w > long {
        img.crop_imm((w - long) / 2, 0, long, h)
    } else if h > long {
        img.crop_imm(0, (h - long) / 2, w, long)
    } else {
        img
    }
}

fn convert_channels(img: DynamicImage, channels: u8) -> DynamicImage {
    let wide = img.color().bytes_per_pixel() / img.color().channel_count() > 1;
    if img.color().channel_count() == channels {
        return img;
    }
    match (channels, wide) {
        (1, false) => DynamicImage::ImageLuma8(img.to_luma8()),
        (1, true) => DynamicImage::ImageLuma16(img.to_luma16()),
        (3, false) => DynamicImage::ImageRgb8(img.to_rgb8()),
        (3, true) => DynamicImage::ImageRgb16(img.to_rgb16()),
        (_, false) => DynamicImage::ImageRgba8(img.to_rgba8()),
        (_, true) => DynamicImage::ImageRgba16(img.to_rgba16()),
    }
}

/// Converts an image to channel-planar floats in [-1, 1], with the same
/// arithmetic as `tensor::image::image_to_tensor` (`v / max * 2 - 1` in f32).
pub fn to_chw(img: &DynamicImage) -> Chw {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let c = usize::from(img.color().channel_count());
    let interleaved: Vec<f32> = match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img
            .as_bytes()
            .iter()
            .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
            .collect(),
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => img
            .as_bytes()
            .chunks_exact(2)
            .map(|b| f32::from(u16::from_ne_bytes([b[0], b[1]])) / 65535.0 * 2.0 - 1.0)
            .collect(),
        other => {
            let rgba = other.to_rgba32f();
            rgba.pixels()
                .flat_map(|p| p.0[..c.min(4)].to_vec())
                .map(|v| v * 2.0 - 1.0)
                .collect()
        }
    };
    let mut data = vec![0f32; c * h * w];
    for (p, px) in interleaved.chunks_exact(c).enumerate() {
        for (ch, v) in px.iter().enumerate() {
            data[ch * h * w + p] = *v;
        }
    }
    Chw {
        data,
        channels: c,
        height: h,
        width: w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 7])))
    }

    #[test]
    fn identity_matches_tensor_crate_bit_for_bit() {
        let img = gradient(5, 4);
        let chw = Preprocess::default().apply_deterministic(img.clone());
        let t = tensor::image::image_to_tensor(&img);
        assert_eq!(t.size(), [3, 4, 5]);
        assert_eq!(chw.data, Vec::<f32>::try_from(t.flatten(0, -1)).unwrap());
    }

    #[test]
    fn sixteen_bit_precision_survives() {
        let img =
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(2, 1, |x, _| Luma([x as u16 + 1000])));
        let chw = to_chw(&img);
        let step = chw.data[1] - chw.data[0];
        assert!((f64::from(step) - 2.0 / 65535.0).abs() < 1e-6, "{step}");
        // and through a channel conversion to RGB, still 16-bit
        let p = Preprocess {
            channels: Some(3),
            ..Default::default()
        };
        let rgb = p.apply_deterministic(img);
        assert_eq!(rgb.channels, 3);
        assert!((f64::from(rgb.data[1] - rgb.data[0]) - 2.0 / 65535.0).abs() < 1e-6);
    }

    #[test]
    fn resize_shorter_side_then_center_crop() {
        let p = Preprocess {
            resolution: Some(8),
            ..Default::default()
        };
        let out = p.apply_deterministic(gradient(32, 16));
        assert_eq!((out.channels, out.height, out.width), (3, 8, 8));
        // center crop of a 16x8 resize keeps the middle: red (x) mid-range
        let red_mid = out.data[4 * 8 + 4];
        assert!(red_mid > -1.0 && red_mid < 1.0);
    }

    #[test]
    fn extreme_and_empty_images_stay_bounded() {
        let p = Preprocess {
            resolution: Some(8),
            ..Default::default()
        };
        // 1 x 100,000: resized as 1 x 16 (MAX_ASPECT), not 8 x 800,000.
        let long = DynamicImage::ImageLuma8(GrayImage::new(1, 100_000));
        let out = p.apply_deterministic(long);
        assert_eq!((out.height, out.width), (8, 8));
        // Within the limit, the center crop is the one without the limit.
        let wide = gradient(16 * 4, 4);
        assert_eq!(limit_aspect(wide.clone()), wide);
        // No pixels: nothing to resize, no division by zero.
        let empty = p.apply_deterministic(DynamicImage::ImageRgb8(RgbImage::new(5, 0)));
        assert_eq!(empty.data.len(), 0);
    }

    #[test]
    fn flips_and_crops_follow_the_generator() {
        let p = Preprocess {
            resolution: Some(6),
            crop: Crop::Random,
            random_flip: true,
            ..Default::default()
        };
        let img = gradient(10, 6);
        let runs: Vec<Chw> = (0..16)
            .map(|i| p.apply(img.clone(), &mut SplitMix64::new(i)))
            .collect();
        assert!(runs.iter().all(|r| r.width == 6 && r.height == 6));
        let distinct = runs.iter().filter(|r| r.data != runs[0].data).count();
        assert!(distinct > 0, "randomness has no effect");
        let again = p.apply(img, &mut SplitMix64::new(3));
        assert_eq!(again, runs[3]);
    }

    #[test]
    fn grey_to_rgb_and_back() {
        let grey = DynamicImage::ImageLuma8(GrayImage::from_fn(3, 3, |x, _| Luma([x as u8 * 100])));
        let rgb = Preprocess {
            channels: Some(3),
            ..Default::default()
        }
        .apply_deterministic(grey);
        assert_eq!(rgb.channels, 3);
        assert_eq!(rgb.data[..9], rgb.data[9..18]);
        let p = Preprocess {
            channels: Some(2),
            ..Default::default()
        };
        assert!(p
            .validate()
            .unwrap_err()
            .to_string()
            .contains("channels = 2"));
    }

    #[test]
    fn config_round_trips_and_rejects_typos() {
        let p = Preprocess {
            resolution: Some(32),
            random_flip: true,
            channels: Some(1),
            ..Default::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Preprocess>(&json).unwrap(), p);
        let err = serde_json::from_str::<Preprocess>(r#"{"resolutoin": 3}"#).unwrap_err();
        assert!(err.to_string().contains("resolutoin"));
    }
}
