//! Images <-> tensors.
//!
//! An image becomes a float32 `[C, H, W]` tensor in [-1, 1], keeping its
//! channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) and its full precision: an
//! 8-bit value `v` maps to `v / 255 * 2 - 1`, a 16-bit one to
//! `v / 65535 * 2 - 1`, and writing back at the same bit depth restores every
//! value exactly. A batch `[N, C, H, W]` can be laid out as one grid image.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader};
use tch::{Device, Kind, Tensor};

use crate::{fs, Error, Result};

/// Bits per channel of an image file written from a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitDepth {
    #[default]
    Eight,
    Sixteen,
}

impl BitDepth {
    fn max_value(self) -> f64 {
        match self {
            BitDepth::Eight => 255.0,
            BitDepth::Sixteen => 65535.0,
        }
    }
}

impl TryFrom<u8> for BitDepth {
    type Error = Error;

    fn try_from(bits: u8) -> Result<Self> {
        match bits {
            8 => Ok(BitDepth::Eight),
            16 => Ok(BitDepth::Sixteen),
            other => Err(Error::BitDepth(other)),
        }
    }
}

/// Decodes the image file at `path` into a `[C, H, W]` tensor in [-1, 1].
///
/// The format is guessed from the content, not the extension. A missing,
/// empty, truncated or corrupt file is an error naming the path.
pub fn load_image(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let img = decode(path)?;
    Ok(image_to_tensor(&img))
}

/// Decodes the image file at `path` (format guessed from the content); an
/// image without pixels (0 wide or high, which a corrupt header can
/// declare) is an error.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let fail = |reason: String| Error::ImageDecode {
        path: path.to_path_buf(),
        reason,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        return Err(fail(if len == 0 {
            "the file is empty".to_string()
        } else {
            "not an image format this build reads (PNG, JPEG, BMP, TIFF, WebP)".to_string()
        }));
    }
    let img = reader.decode().map_err(|e| fail(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fail(format!(
            "the image is empty ({}x{} pixels)",
            img.width(),
            img.height()
        )));
    }
    Ok(img)
}

/// Converts a decoded image to a float32 `[C, H, W]` tensor in [-1, 1].
pub fn image_to_tensor(img: &DynamicImage) -> Tensor {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let channels = i64::from(img.color().channel_count());
    let hwc = |t: Tensor| {
        t.view([h, w, channels])
            .permute([2, 0, 1])
            .to_kind(Kind::Float)
    };
    match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => {
            let t = hwc(Tensor::from_slice(img.as_bytes()));
            t / 255.0 * 2.0 - 1.0
        }
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let values: Vec<i32> = img
                .as_bytes()
                .chunks_exact(2)
                .map(|b| i32::from(u16::from_ne_bytes([b[0], b[1]])))
                .collect();
            let t = hwc(Tensor::from_slice(&values));
            t / 65535.0 * 2.0 - 1.0
        }
        other => {
            // Float images (and any future variant): through RGBA f32 in [0, 1].
            let rgba = other.to_rgba32f();
            let t = Tensor::from_slice(rgba.as_raw())
                .view([h, w, 4])
                .permute([2, 0, 1]);
            let t = if channels == 3 { t.narrow(0, 0, 3) } else { t };
            t * 2.0 - 1.0
        }
    }
}

/// Converts a `[C, H, W]` tensor in [-1, 1] (any float kind, any device) to an
/// image with `C` channels. Values outside [-1, 1] are clamped.
pub fn tensor_to_image(t: &Tensor, depth: BitDepth) -> Result<DynamicImage> {
    let shape = t.size();
    let [c, h, w] = shape[..] else {
        return Err(Error::ImageShape { shape });
    };
    if !(1..=4).contains(&c) {
        return Err(Error::ImageShape { shape });
    }
    let max = depth.max_value();
    let scaled = ((t
        .f_to_device(Device::Cpu)?
        .to_kind(Kind::Float)
        .clamp(-1.0, 1.0)
        + 1.0)
        / 2.0
        * max)
        .round()
        .permute([1, 2, 0])
        .contiguous()
        .flatten(0, -1);
    let (w, h) = (w as u32, h as u32);
    let bad = || Error::ImageShape {
        shape: shape.clone(),
    };
    Ok(match depth {
        BitDepth::Eight => {
            let v = Vec::<u8>::try_from(scaled.to_kind(Kind::Uint8))?;
            match c {
                1 => DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                2 => DynamicImage::ImageLumaA8(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                3 => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                _ => DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
            }
        }
        BitDepth::Sixteen => {
            let v: Vec<u16> = Vec::<i32>::try_from(scaled.to_kind(Kind::Int))?
                .into_iter()
                .map(|x| x as u16)
                .collect();
            match c {
                1 => DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                2 => DynamicImage::ImageLumaA16(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                3 => DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
                _ => DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, v).ok_or_else(bad)?),
            }
        }
    })
}

/// Writes a `[C, H, W]` tensor in [-1, 1] as an image file, atomically. The
/// format follows the extension (`.png` recommended; 16-bit needs PNG or TIFF).
pub fn save_image(path: impl AsRef<Path>, t: &Tensor, depth: BitDepth) -> Result<()> {
    let path = path.as_ref();
    let img = tensor_to_image(t, depth)?;
    let fail = |reason: String| Error::ImageEncode {
        path: path.to_path_buf(),
        reason,
    };
    let format = ImageFormat::from_path(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format)
        .map_err(|e| fail(e.to_string()))?;
    fs::write_bytes_atomic(path, bytes.get_ref())
}

/// Lays out a batch `[N, C, H, W]` as one `[C, H', W']` image: `nrow` images
/// per row, `padding` pixels of `pad_value` around and between them.
pub fn make_grid(batch: &Tensor, nrow: i64, padding: i64, pad_value: f64) -> Result<Tensor> {
    let shape = batch.size();
    let [n, c, h, w] = shape[..] else {
        return Err(Error::ImageShape { shape });
    };
    let ncol = nrow.clamp(1, n.max(1));
    let nrows = (n + ncol - 1) / ncol;
    let (cell_h, cell_w) = (h + padding, w + padding);
    let grid = Tensor::full(
        [c, nrows * cell_h + padding, ncol * cell_w + padding],
        pad_value,
        (batch.kind(), batch.device()),
    );
    for i in 0..n {
        let (row, col) = (i / ncol, i % ncol);
        grid.narrow(1, row * cell_h + padding, h)
            .narrow(2, col * cell_w + padding, w)
            .copy_(&batch.get(i));
    }
    Ok(grid)
}

/// Writes a batch `[N, C, H, W]` in [-1, 1] as one 8-bit grid image.
pub fn save_grid(path: impl AsRef<Path>, batch: &Tensor, nrow: i64) -> Result<()> {
    let grid = make_grid(batch, nrow, 2, 0.0)?;
    save_image(path, &grid, BitDepth::Eight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma, Rgb, Rgba};

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        img.write_to(&mut c, ImageFormat::Png).unwrap();
        c.into_inner()
    }

    /// Writes `img` as PNG, loads it as a tensor, writes the tensor back at
    /// `depth` and returns the reloaded image.
    fn round_trip(img: &DynamicImage, depth: BitDepth) -> (Tensor, DynamicImage) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in.png");
        std::fs::write(&src, png_bytes(img)).unwrap();
        let t = load_image(&src).unwrap();
        let dst = dir.path().join("out.png");
        save_image(&dst, &t, depth).unwrap();
        (t, decode(&dst).unwrap())
    }

    #[test]
    fn every_8bit_grey_value_round_trips_exactly() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(16, 16, |x, y| {
            Luma([(y * 16 + x) as u8])
        }));
        let (t, back) = round_trip(&img, BitDepth::Eight);
        assert_eq!(t.size(), [1, 16, 16]);
        assert_eq!(t.min().double_value(&[]), -1.0);
        assert_eq!(t.max().double_value(&[]), 1.0);
        assert_eq!(back, img);
    }

    #[test]
    fn every_16bit_grey_value_round_trips_exactly() {
        let img = DynamicImage::ImageLuma16(ImageBuffer::from_fn(256, 256, |x, y| {
            Luma([(y * 256 + x) as u16])
        }));
        let (t, back) = round_trip(&img, BitDepth::Sixteen);
        assert_eq!(t.size(), [1, 256, 256]);
        // 16-bit precision survives: neighbouring codes stay distinct
        let d = (t.get(0).get(0).get(1) - t.get(0).get(0).get(0)).double_value(&[]);
        assert!((d - 2.0 / 65535.0).abs() < 1e-7, "{d}");
        assert_eq!(back, img);
    }

    #[test]
    fn rgb_and_rgba_round_trip_exactly_at_both_depths() {
        let rgb8 = DynamicImage::ImageRgb8(ImageBuffer::from_fn(9, 7, |x, y| {
            Rgb([(x * 28) as u8, (y * 36) as u8, ((x * y * 5) % 256) as u8])
        }));
        let rgba8 = DynamicImage::ImageRgba8(ImageBuffer::from_fn(5, 6, |x, y| {
            Rgba([(x * 50) as u8, (y * 40) as u8, 7, (255 - x * y) as u8])
        }));
        let rgb16 = DynamicImage::ImageRgb16(ImageBuffer::from_fn(9, 7, |x, y| {
            Rgb([
                (x * 7919) as u16,
                (y * 9001) as u16,
                ((x * y * 4099) % 65536) as u16,
            ])
        }));
        for (img, depth, channels) in [
            (rgb8, BitDepth::Eight, 3),
            (rgba8, BitDepth::Eight, 4),
            (rgb16, BitDepth::Sixteen, 3),
        ] {
            let (t, back) = round_trip(&img, depth);
            assert_eq!(t.size()[0], channels);
            assert_eq!(
                t.size()[1..],
                [i64::from(img.height()), i64::from(img.width())]
            );
            assert_eq!(back, img);
        }
    }

    #[test]
    fn channel_layout_is_chw() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(3, 2, |x, y| {
            Rgb([255, if x == 2 && y == 1 { 255 } else { 0 }, 0])
        }));
        let t = image_to_tensor(&img);
        assert_eq!(t.size(), [3, 2, 3]);
        assert_eq!(t.get(0).min().double_value(&[]), 1.0);
        assert_eq!(t.double_value(&[1, 1, 2]), 1.0);
        assert_eq!(t.double_value(&[1, 0, 2]), -1.0);
    }

    #[test]
    fn missing_empty_and_corrupt_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.png");
        let err = load_image(&missing).unwrap_err().to_string();
        assert_eq!(err, format!("no such file: {}", missing.display()));

        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let err = load_image(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.png") && err.contains("empty"), "{err}");

        let garbage = dir.path().join("garbage.png");
        std::fs::write(&garbage, b"this is not an image at all").unwrap();
        let err = load_image(&garbage).unwrap_err().to_string();
        assert!(err.contains("garbage.png"), "{err}");

        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(32, 32, |x, _| Luma([x as u8])));
        let bytes = png_bytes(&img);
        let truncated = dir.path().join("truncated.png");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_image(&truncated).unwrap_err().to_string();
        assert!(
            err.contains("truncated.png") && err.contains("cannot read image"),
            "{err}"
        );

        // A GIF (named .png) that decodes to 5x0 pixels, found by the fuzz
        // test of the image loader: an error, not an image with no pixels.
        let hex = "4749463839610500000080000000000000000021f90408000000002c0000000005000300\
                   8300000700500700a00728000728500728a00750000750500750a00778000778500778a0\
                   07a00007a05007a0a007000000040b100c935820473551d07211003b";
        let hex: Vec<u8> = hex.bytes().filter(u8::is_ascii_hexdigit).collect();
        let gif: Vec<u8> = hex
            .chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect();
        let no_pixels = dir.path().join("no-pixels.png");
        std::fs::write(&no_pixels, gif).unwrap();
        let err = load_image(&no_pixels).unwrap_err().to_string();
        assert!(
            err.contains("no-pixels.png") && err.contains("empty (5x0 pixels)"),
            "{err}"
        );
    }

    #[test]
    fn bad_tensor_shapes_are_rejected() {
        let t = Tensor::zeros([5, 4, 4], (Kind::Float, Device::Cpu));
        assert!(tensor_to_image(&t, BitDepth::Eight).is_err());
        let t = Tensor::zeros([4, 4], (Kind::Float, Device::Cpu));
        assert!(tensor_to_image(&t, BitDepth::Eight)
            .unwrap_err()
            .to_string()
            .contains("[4, 4]"));
    }

    #[test]
    fn grid_places_each_image_in_its_cell() {
        let batch = Tensor::arange(5, (Kind::Float, Device::Cpu))
            .view([5, 1, 1, 1])
            .expand([5, 1, 3, 2], false)
            / 10.0;
        let grid = make_grid(&batch, 2, 1, -1.0).unwrap();
        // 3 rows of 2 cells, each cell 3x2 plus 1 px padding
        assert_eq!(grid.size(), [1, 3 * 4 + 1, 2 * 3 + 1]);
        assert_eq!(grid.double_value(&[0, 0, 0]), -1.0);
        for i in 0..5_i64 {
            let (r, c) = (i / 2, i % 2);
            let v = grid.double_value(&[0, r * 4 + 1, c * 3 + 1]);
            assert!((v - i as f64 / 10.0).abs() < 1e-6);
        }
        // the empty sixth cell stays padding
        assert_eq!(grid.double_value(&[0, 2 * 4 + 1, 3 + 1]), -1.0);
    }
}
