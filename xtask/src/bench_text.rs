//! `cargo xtask bench text`: the text-to-image denoising loop, ours against
//! diffusers on the same libtorch and threads, one after the other.
//!
//! Stable Diffusion 1.5's U-Net (random weights: the same compute as the
//! published one) runs `lmzh bench text` (release build) and
//! `scripts/bench_text_peer.py`: 4 DDIM steps with guidance 7.5 at 256x256
//! pixels (32x32 latents), seconds per image and peak RSS; `--size 512` for
//! the published resolution (one U-Net evaluation takes several seconds on
//! 2 cores).

use anyhow::{bail, Context, Result};

use crate::bench_speed::{build, num, run_ours, run_script};

/// Flags of `cargo xtask bench text`.
#[derive(Debug, Clone)]
pub struct Options {
    pub size: u32,
    pub steps: u32,
    pub layout: String,
}

pub const USAGE: &str = "cargo xtask bench text [--size 256] [--steps 4] [--layout sd15|sd-tiny]";

pub fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        size: 256,
        steps: 4,
        layout: "sd15".into(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value; usage: {USAGE}"))?;
        match flag.as_str() {
            "--size" => o.size = value.parse().context("--size")?,
            "--steps" => o.steps = value.parse().context("--steps")?,
            "--layout" => o.layout = value.clone(),
            other => bail!("unknown flag {other:?}; usage: {USAGE}"),
        }
    }
    if o.size == 0 || !o.size.is_multiple_of(8) || o.steps == 0 {
        bail!("--size must be a positive multiple of 8 and --steps at least 1");
    }
    Ok(o)
}

pub fn run(o: &Options) -> Result<()> {
    let root = crate::workspace_root();
    let bin = build(&root)?;
    let args: Vec<String> = [
        "text",
        "--layout",
        &o.layout,
        "--size",
        &o.size.to_string(),
        "--steps",
        &o.steps.to_string(),
        "--batch",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ours = run_ours(&bin, &args)?;
    let peer = run_script("scripts/bench_text_peer.py", &args)?;
    println!(
        "text-to-image loop, {} U-Net, {}x{} px, {} DDIM steps, guidance 7.5, fp32, {} threads",
        o.layout,
        o.size,
        o.size,
        o.steps,
        num(&ours, "threads")?
    );
    println!("| | s/image | peak RSS MiB |\n|---|---|---|");
    for (name, row) in [("lmzh", &ours), ("diffusers", &peer)] {
        println!(
            "| {name} | {:.2} | {:.0} |",
            num(row, "seconds_per_image")?,
            num(row, "peak_rss_mb")?
        );
    }
    println!(
        "speed: {:.2}x diffusers; peak RSS: {:.2}x",
        num(&peer, "seconds_per_image")? / num(&ours, "seconds_per_image")?,
        num(&ours, "peak_rss_mb")? / num(&peer, "peak_rss_mb")?
    );
    Ok(())
}
