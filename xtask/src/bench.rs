//! `cargo xtask bench [speed|scaling|sample|text|data]`: the benchmarks, in
//! release mode.
//!
//! - `speed` (the default): training and sampling against diffusers, fp32
//!   and bf16, with GFLOP/s and peak RSS (see `bench_speed.rs`).
//! - `scaling`: our training and sampling at 32/64/128 px and batch
//!   16/64/256.
//! - `sample`: our 20-step DPM-Solver++ sampler against diffusers' (see
//!   `bench_sample.rs`).
//! - `text`: the text-to-image denoising loop (Stable Diffusion 1.5's
//!   U-Net) against diffusers (see `bench_text.rs`).
//! - `data`: loader throughput (decode + augment + batch) on the bundled IDX
//!   digits and on a folder of 32x32 PNGs, then the loader against the
//!   default training preset's consumption, in one run.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let which = match args.first().map(String::as_str) {
        None => "speed",
        Some(flag) if flag.starts_with("--") => "speed",
        Some(name) => name,
    };
    let rest = if args.first().is_some_and(|a| !a.starts_with("--")) {
        &args[1..]
    } else {
        args
    };
    if which == "speed" || which == "scaling" {
        return crate::bench_speed::run(&crate::bench_speed::parse(rest, which == "scaling")?);
    }
    if which == "sample" {
        return crate::bench_sample::run(&sample_options(&args[1..])?);
    }
    if which == "text" {
        return crate::bench_text::run(&crate::bench_text::parse(&args[1..])?);
    }
    let benches: &[(&str, &str)] = match which {
        "data" => &[("data-pipeline", "loader"), ("trainer", "data_vs_train")],
        other => {
            bail!("unknown benchmark {other:?}; available: speed, scaling, sample, text, data")
        }
    };
    for (package, bench) in benches {
        let status = Command::new(env!("CARGO"))
            .current_dir(crate::workspace_root())
            .args(["bench", "--package", package, "--bench", bench])
            .status()
            .context("running cargo bench")?;
        if !status.success() {
            bail!("benchmark {package}/{bench} failed ({status})");
        }
    }
    Ok(())
}

fn sample_options(args: &[String]) -> Result<crate::bench_sample::Options> {
    let mut o = crate::bench_sample::Options {
        layout: "default".into(),
        num_images: 64,
        rounds: 3,
        profile: "release".into(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--layout" => o.layout = value.clone(),
            "--num-images" => o.num_images = value.parse().context("--num-images")?,
            "--rounds" => o.rounds = value.parse().context("--rounds")?,
            "--profile" => o.profile = value.clone(),
            other => bail!(
                "unknown flag {other:?}; cargo xtask bench sample [--layout default|cifar10] \
                 [--num-images N] [--rounds R] [--profile release|dev]"
            ),
        }
    }
    if o.rounds == 0 || o.num_images == 0 {
        bail!("--rounds and --num-images must be at least 1");
    }
    Ok(o)
}
