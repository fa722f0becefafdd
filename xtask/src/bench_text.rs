//! `cargo xtask bench text`: the text-to-image denoising loop, ours against
//! diffusers on the same libtorch and threads, one after the other.
//!
//! Stable Diffusion 1.5's U-Net (random weights: the same compute as the
//! published one) runs `lmzh bench text` (release build) and
//! `scripts/bench_text_peer.py`: 4 DDIM steps with guidance 7.5 at 256x256
//! pixels (32x32 latents), seconds per image and peak RSS; `--size 512` for
//! the published resolution (one U-Net evaluation takes several seconds on
//! 2 cores).

use anyhow::Result;

use crate::bench_speed::{build, num, run_ours, run_script};
use crate::flags::{Flags, Parsed};

/// Flags of `cargo xtask bench text`.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub size: u32,
    pub steps: u32,
    pub layout: String,
}

pub const USAGE: &str = "\
usage: cargo xtask bench text [--size 256] [--steps 4] [--layout sd15|sd-tiny]

The text-to-image denoising loop (Stable Diffusion 1.5's U-Net, random
weights; 4 DDIM steps, guidance 7.5) of lmzh against diffusers on the same
libtorch and threads: seconds per image and peak RSS. --size is in pixels
(a multiple of 8; latents are size / 8).
";

pub fn parse(args: &[String]) -> Result<Parsed<Options>> {
    let mut f = Flags::new("bench text", USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut o = Options {
        size: 256,
        steps: 4,
        layout: "sd15".into(),
    };
    while let Some(flag) = f.next() {
        match flag {
            "--size" => o.size = f.parse(flag)?,
            "--steps" => o.steps = f.parse(flag)?,
            "--layout" => o.layout = f.value(flag)?.to_string(),
            other => return Err(f.unknown(other)),
        }
    }
    if o.size == 0 || !o.size.is_multiple_of(8) || o.steps == 0 {
        return Err(f.error("--size must be a positive multiple of 8 and --steps at least 1"));
    }
    Ok(Parsed::Run(o))
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
