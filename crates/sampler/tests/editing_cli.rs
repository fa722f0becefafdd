//! The editing commands end to end on the bundled model: flags parsed as
//! `lmzh` parses them, outputs written, and the errors a user can run into.

use std::path::{Path, PathBuf};

use clap::Parser;
use data_pipeline::source::SourceSpec;
use image::{DynamicImage, GrayImage, Luma};
use sampler::cli::{denoise, edit, inpaint, interpolate};

#[derive(Debug, Parser)]
struct Cmd<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

fn parse<A: clap::Args>(flags: &[&str]) -> A {
    let argv = std::iter::once("lmzh").chain(flags.iter().copied());
    Cmd::<A>::try_parse_from(argv).unwrap().args
}

fn model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/models/digits")
        .display()
        .to_string()
}

/// Writes bundled digits `indices` as PNGs into `dir`.
fn write_digits(dir: &Path, indices: &[usize]) -> Vec<String> {
    let set = "digits"
        .parse::<SourceSpec>()
        .unwrap()
        .open(&Default::default())
        .unwrap();
    indices
        .iter()
        .map(|&i| {
            let p = dir.join(format!("digit-{i}.png"));
            set.image(i).unwrap().save(&p).unwrap();
            p.display().to_string()
        })
        .collect()
}

fn size_of(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap()
}

#[test]
fn edit_writes_the_result_and_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_digits(dir.path(), &[7, 507]);
    let out = dir.path().join("out/edited.png");
    let compare = dir.path().join("compare.png");
    let args: edit::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs.join(","),
        "--strength",
        "0,0.2",
        "--steps",
        "10",
        "--labels",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--compare",
        compare.to_str().unwrap(),
    ]);
    let summary = edit::run(&args).unwrap();
    assert_eq!(summary.runs.len(), 2);
    assert_eq!(summary.runs[1].2, 2, "{summary}");
    // Two strengths x two images, 2-pixel padding.
    assert_eq!(size_of(&out), (2 * 30 + 2, 2 * 30 + 2));
    assert_eq!(size_of(&compare), (2 * 30 + 2, 3 * 30 + 2));
    // One image, strength 0: the input itself.
    let one = dir.path().join("one.png");
    let args: edit::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs[0],
        "--strength",
        "0",
        "--out",
        one.to_str().unwrap(),
    ]);
    edit::run(&args).unwrap();
    let a = image::open(&one).unwrap();
    let b = image::open(&inputs[0]).unwrap();
    assert_eq!(a.to_luma8(), b.to_luma8());
    // Errors name the flag or the file.
    let bad: edit::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs[0],
        "--strength",
        "1.5",
    ]);
    let e = edit::run(&bad).unwrap_err().to_string();
    assert!(e.contains("strength 1.5"), "{e}");
    let missing = dir.path().join("missing.png");
    let bad: edit::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        missing.to_str().unwrap(),
    ]);
    let e = edit::run(&bad).unwrap_err().to_string();
    assert!(e.contains("missing.png"), "{e}");
    let bad: edit::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs[0],
        "--labels",
        "eleven",
    ]);
    let e = edit::run(&bad).unwrap_err().to_string();
    assert!(e.contains("eleven") && e.contains("class name"), "{e}");
}

#[test]
fn inpaint_checks_the_mask_and_keeps_the_known_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_digits(dir.path(), &[1007]);
    let mask = dir.path().join("mask.png");
    DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, _| {
        Luma([if x >= 14 { 255 } else { 0 }])
    }))
    .save(&mask)
    .unwrap();
    let out = dir.path().join("filled.png");
    let compare = dir.path().join("compare.png");
    let args: inpaint::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs[0],
        "--mask",
        mask.to_str().unwrap(),
        "--steps",
        "10",
        "--jump-length",
        "3",
        "--jump-n-sample",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--compare",
        compare.to_str().unwrap(),
    ]);
    let summary = inpaint::run(&args).unwrap();
    assert!((summary.filled - 0.5).abs() < 1e-9, "{summary}");
    let a = image::open(&out).unwrap().to_luma8();
    let b = image::open(&inputs[0]).unwrap().to_luma8();
    for (x, y, p) in a.enumerate_pixels() {
        if x < 14 {
            assert_eq!(p, b.get_pixel(x, y), "({x}, {y})");
        }
    }
    assert_eq!(size_of(&compare), (30 + 2, 3 * 30 + 2));
    let small = dir.path().join("small.png");
    DynamicImage::ImageLuma8(GrayImage::new(14, 14))
        .save(&small)
        .unwrap();
    let bad: inpaint::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--image",
        &inputs[0],
        "--mask",
        small.to_str().unwrap(),
    ]);
    let e = inpaint::run(&bad).unwrap_err().to_string();
    assert!(
        e.contains("small.png") && e.contains("14x14") && e.contains("28x28"),
        "{e}"
    );
}

#[test]
fn denoise_reports_the_timestep_and_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let clean = write_digits(dir.path(), &[2507]);
    // The digit plus noise of sigma 0.2, clipped and 8-bit.
    let digit = image::open(&clean[0]).unwrap().to_luma8();
    tch::manual_seed(4);
    let noise = tch::Tensor::randn([28 * 28], (tch::Kind::Float, tch::Device::Cpu)) * 0.2;
    let noise: Vec<f32> = Vec::try_from(&noise).unwrap();
    let noisy = dir.path().join("noisy.png");
    GrayImage::from_fn(28, 28, |x, y| {
        let v = f32::from(digit.get_pixel(x, y)[0]) / 255.0 + noise[(y * 28 + x) as usize];
        Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8])
    })
    .save(&noisy)
    .unwrap();
    let out = dir.path().join("denoised.png");
    let model = model();
    for how in [["--sigma", "0.2"], ["--estimate", "--estimate"]] {
        let mut flags = vec![
            "--model",
            &model,
            "--device",
            "cpu",
            "--image",
            noisy.to_str().unwrap(),
            "--reference",
            &clean[0],
            "--out",
            out.to_str().unwrap(),
        ];
        flags.extend(if how[0] == "--sigma" {
            &how[..]
        } else {
            &how[..1]
        });
        let args: denoise::Args = parse(&flags);
        let summary = denoise::run(&args).unwrap();
        let r = &summary.reports[0];
        let (before, after) = r.mse.unwrap();
        eprintln!("{summary}");
        assert!(r.timestep > 0 && after < before, "{summary}");
    }
    let e = Cmd::<denoise::Args>::try_parse_from(["lmzh", "--image", "x.png"]).unwrap_err();
    assert!(e.to_string().contains("--sigma"), "{e}");
}

#[test]
fn interpolate_writes_a_strip() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write_digits(dir.path(), &[507, 3507]);
    let out = dir.path().join("strip.png");
    let args: interpolate::Args = parse(&[
        "--model",
        &model(),
        "--device",
        "cpu",
        "--a",
        &inputs[0],
        "--b",
        &inputs[1],
        "--frames",
        "3",
        "--steps",
        "5",
        "--refine",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    interpolate::run(&args).unwrap();
    assert_eq!(size_of(&out), (5 * 30 + 2, 30 + 2));
}
