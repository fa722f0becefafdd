//! Writes input images for the editing commands from the bundled digits:
//! `digit-<i>.png` (28x28 grey), `noisy-<i>.png` (the digit plus Gaussian
//! noise of `--sigma` in [0, 1] pixel units, clipped and quantised to 8
//! bits) for each index, and three masks (`mask-right.png`, `mask-top.png`,
//! `mask-center.png`; white = fill).
//!
//! ```text
//! cargo run -p sampler --example edit_inputs -- --out /tmp/inputs [--indices 7,507] [--sigma 0.2] [--seed 0]
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use data_pipeline::source::SourceSpec;
use image::{DynamicImage, GrayImage, Luma};
use tch::{Device, Kind, Tensor};
use tensor::image::{image_to_tensor, save_image, BitDepth};

#[derive(Debug, Parser)]
struct Args {
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Indices into the bundled digits (500 per class, in class order).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "7,507,1007,1507,2007,2507,3007,3507,4007,4507"
    )]
    indices: Vec<usize>,
    /// Noise of the noisy copies, in [0, 1] pixel units.
    #[arg(long, default_value_t = 0.2)]
    sigma: f64,
    /// Seed of that noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn mask(f: impl Fn(u32, u32) -> bool) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| {
        Luma([if f(x, y) { 255 } else { 0 }])
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;
    let digits = "digits".parse::<SourceSpec>()?.open(&Default::default())?;
    tensor::seed::seed_everything(args.seed);
    for &i in &args.indices {
        anyhow::ensure!(
            i < digits.len(),
            "index {i}: the digits have {}",
            digits.len()
        );
        let img = digits.image(i)?;
        let x = image_to_tensor(&img);
        img.save(args.out.join(format!("digit-{i}.png")))?;
        let noise = Tensor::randn(x.size(), (Kind::Float, Device::Cpu));
        // sigma in [0, 1] pixel units is 2 sigma in [-1, 1].
        let noisy = &x + noise * (2.0 * args.sigma);
        save_image(
            args.out.join(format!("noisy-{i}.png")),
            &noisy,
            BitDepth::Eight,
        )?;
    }
    mask(|x, _| x >= 14).save(args.out.join("mask-right.png"))?;
    mask(|_, y| y < 14).save(args.out.join("mask-top.png"))?;
    mask(|x, y| (8..20).contains(&x) && (8..20).contains(&y))
        .save(args.out.join("mask-center.png"))?;
    println!(
        "wrote {} digits, their noisy copies and 3 masks to {}",
        args.indices.len(),
        args.out.display()
    );
    Ok(())
}
