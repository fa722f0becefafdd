//! Hostile bytes into the data loaders: IDX files (plain and gzipped),
//! CIFAR-10 batches and image files in a folder (every decoder the build
//! has, then the preprocessing), each through `SourceSpec::open` as a user's
//! files would go. Errors are fine; a panic, an abort or an allocation the
//! file cannot justify is a failure. `LMZH_FUZZ_CASES` sets the number of
//! inputs (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use std::io::{Cursor, Write};
use std::path::PathBuf;

use data_pipeline::preprocess::{to_chw, Crop, Preprocess};
use data_pipeline::source::{idx, OpenOptions, SourceSpec, Split};
use image::{DynamicImage, ImageBuffer, ImageFormat};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Opens the source and reads a few of the images and labels it claims.
fn touch(spec: &SourceSpec, opts: &OpenOptions) -> bool {
    let Ok(ds) = spec.open(opts) else {
        return false;
    };
    let n = ds.len();
    for i in [0, n / 2, n.saturating_sub(1)] {
        if i < n {
            let _ = ds.label(i);
            let _ = ds.describe(i);
            let _ = ds.size(i);
            if let Ok(img) = ds.image(i) {
                let _ = to_chw(&img);
            }
        }
    }
    let _ = ds.check_uniform_size();
    true
}

/// Images and labels, split in the input at a `ff 00 ff` marker (no
/// marker: images only).
#[test]
fn idx_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let images = dir.path().join("images-idx3-ubyte");
    let labels = dir.path().join("labels-idx1-ubyte");
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7) as u8).collect();
    let img3 = idx::encode(&[3, 4, 5], &pixels);
    let img4 = idx::encode(&[1, 2, 2, 3], &pixels[..12]);
    let lab = idx::encode(&[3], &[0, 9, 4]);
    let lab1 = idx::encode(&[1], &[2]);
    const MARKER: [u8; 3] = [0xff, 0x00, 0xff];
    let pair = |i: &[u8], l: &[u8]| [i, &MARKER[..], l].concat();
    let seeds = vec![
        pair(&img3, &lab),
        pair(&img4, &lab1),
        img3.clone(),
        pair(&gz(&img3), &gz(&lab)),
        gz(&img4),
    ];
    harness::fuzz("idx", &seeds, |bytes| {
        let (i, l) = match bytes.windows(3).position(|w| w == MARKER) {
            Some(at) => (&bytes[..at], Some(&bytes[at + 3..])),
            None => (bytes, None),
        };
        std::fs::write(&images, i).unwrap();
        if let Some(l) = l {
            std::fs::write(&labels, l).unwrap();
        }
        let spec = SourceSpec::Idx {
            images: images.clone(),
            labels: l.map(|_| labels.clone()),
        };
        touch(&spec, &OpenOptions::default())
    });
}

#[test]
fn cifar_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let batch = dir.path().join("test_batch.bin");
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3 * 32 * 32).map(|i| (i % 251) as u8));
        r
    };
    let seeds = vec![record(3), [record(0), record(9)].concat()];
    let spec = SourceSpec::Cifar10 {
        dir: Some(dir.path().to_path_buf()),
        split: Split::Test,
    };
    harness::fuzz("cifar10", &seeds, |bytes| {
        std::fs::write(&batch, bytes).unwrap();
        touch(&spec, &OpenOptions::default())
    });
}

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn image_seeds() -> Vec<Vec<u8>> {
    let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(5, 3, |x, y| {
        image::Rgb([(x * 40) as u8, (y * 80) as u8, 7])
    }));
    let grey = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 4, |x, y| {
        image::Luma([(x * 16 + y) as u8])
    }));
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(3, 2, |x, _| {
        image::Rgba([x as u8, 1, 2, 200])
    }));
    let grey16 = DynamicImage::ImageLuma16(ImageBuffer::from_fn(3, 3, |x, y| {
        image::Luma([(x * 20000 + y) as u16])
    }));
    vec![
        encoded(&rgb, ImageFormat::Png),
        encoded(&grey, ImageFormat::Png),
        encoded(&rgba, ImageFormat::Png),
        encoded(&grey16, ImageFormat::Png),
        encoded(&rgb, ImageFormat::Jpeg),
        encoded(&grey, ImageFormat::Jpeg),
        encoded(&rgb, ImageFormat::Bmp),
        encoded(&rgba, ImageFormat::Bmp),
        encoded(&rgb, ImageFormat::Tiff),
        encoded(&grey16, ImageFormat::Tiff),
        encoded(&rgba, ImageFormat::WebP),
        encoded(&rgb, ImageFormat::Gif),
    ]
}

/// One file in a folder, opened decoded up front (strict) and lazily, in
/// turn, then preprocessed as training and sampling do.
#[test]
fn image_folder_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let root: PathBuf = dir.path().join("images");
    std::fs::create_dir(&root).unwrap();
    let file = root.join("x.png");
    let spec = SourceSpec::Folder(root.clone());
    let preprocess = Preprocess {
        resolution: Some(8),
        crop: Crop::Center,
        channels: Some(3),
        ..Preprocess::default()
    };
    let mut cached = false;
    harness::fuzz("image", &image_seeds(), |bytes| {
        std::fs::write(&file, bytes).unwrap();
        cached = !cached;
        let opts = OpenOptions {
            strict: cached,
            cache: Some(cached),
        };
        let Ok(ds) = spec.open(&opts) else {
            return false;
        };
        match ds.image(0) {
            Ok(img) => {
                let _ = tensor::image::image_to_tensor(&img);
                let _ = preprocess.apply_deterministic(img);
                true
            }
            Err(_) => false,
        }
    });
}
