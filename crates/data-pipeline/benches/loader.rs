//! Loader throughput: images per second for decode + augment + batch, on the
//! bundled IDX digits and on a folder of 32x32 PNGs.
//!
//! Run: `cargo bench -p data-pipeline --bench loader` (or `cargo xtask bench data`).

use std::time::Instant;

use data_pipeline::loader::{DataLoader, LoaderConfig, Position};
use data_pipeline::preprocess::{Crop, Preprocess};
use data_pipeline::source::{OpenOptions, SourceSpec};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn measure(name: &str, spec: &SourceSpec, pre: &Preprocess, opts: &OpenOptions, batches: usize) {
    let ds = spec.open(opts).expect("open");
    let cfg = LoaderConfig {
        batch_size: 64,
        ..Default::default()
    };
    let mut loader = DataLoader::new(ds, pre.clone(), cfg, Position::default()).expect("loader");
    loader.next_batch().expect("warm-up");
    let t = Instant::now();
    for _ in 0..batches {
        std::hint::black_box(loader.next_batch().expect("batch"));
    }
    let secs = t.elapsed().as_secs_f64();
    println!("{name:<40} {:>10.0} img/s", (batches * 64) as f64 / secs);
}

fn main() {
    let augment = Preprocess {
        random_flip: true,
        ..Default::default()
    };
    measure(
        "digits (IDX, 28x28 grey)",
        &SourceSpec::Digits,
        &augment,
        &OpenOptions::default(),
        200,
    );

    let dir = tempfile::tempdir().expect("temp dir");
    for i in 0..2048u32 {
        let img = RgbImage::from_fn(32, 32, |x, y| {
            Rgb([(x * 8) as u8, (y * 8) as u8, (i % 256) as u8])
        });
        DynamicImage::ImageRgb8(img)
            .save_with_format(dir.path().join(format!("{i:05}.png")), ImageFormat::Png)
            .expect("write png");
    }
    let folder = SourceSpec::Folder(dir.path().to_path_buf());
    let crop = Preprocess {
        resolution: Some(28),
        crop: Crop::Random,
        random_flip: true,
        ..Default::default()
    };
    let lazy = OpenOptions {
        cache: Some(false),
        ..Default::default()
    };
    measure(
        "folder of 32x32 PNG, decode every time",
        &folder,
        &crop,
        &lazy,
        100,
    );
    let cached = OpenOptions {
        cache: Some(true),
        ..Default::default()
    };
    measure("folder of 32x32 PNG, cached", &folder, &crop, &cached, 100);
}
