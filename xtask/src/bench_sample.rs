//! `cargo xtask bench sample`: our sampler against diffusers on the same
//! weights, same threads, same 20-step DPM-Solver++ (diffusers' defaults), in
//! one run, alternating, median of the rounds.
//!
//! Both are timed from model load to the end of sampling, as each reports it:
//! the `sampler` summary line (model load, sampling and the PNG writes) and
//! the script's timer (model load and sampling). Process start-up (libtorch's
//! shared libraries; Python and torch imports) is not counted on either side.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::flags::{Flags, Parsed};

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub layout: String,
    pub num_images: usize,
    pub rounds: usize,
    pub profile: String,
}

pub const USAGE: &str = "\
usage: cargo xtask bench sample [--layout default|cifar10] [--num-images N] [--rounds R]
                                [--profile release|dev]

Our `sampler` (20-step dpm++2m) against diffusers on the same weights, same
threads, alternating, median of the rounds (default: layout default, 64
images, 3 rounds, release build).
";

pub fn parse(args: &[String]) -> Result<Parsed<Options>> {
    let mut f = Flags::new("bench sample", USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut o = Options {
        layout: "default".into(),
        num_images: 64,
        rounds: 3,
        profile: "release".into(),
    };
    while let Some(flag) = f.next() {
        match flag {
            "--layout" => o.layout = f.value(flag)?.to_string(),
            "--num-images" => o.num_images = f.parse(flag)?,
            "--rounds" => o.rounds = f.parse(flag)?,
            "--profile" => o.profile = f.value(flag)?.to_string(),
            other => return Err(f.unknown(other)),
        }
    }
    if o.rounds == 0 || o.num_images == 0 {
        return Err(f.error("--rounds and --num-images must be at least 1"));
    }
    Ok(Parsed::Run(o))
}

pub fn run(o: &Options) -> Result<()> {
    let root = crate::workspace_root();
    let work = root.join("target/bench-sample").join(&o.layout);
    let model = work.join("model");
    if !model.join("model_index.json").is_file() {
        std::fs::create_dir_all(&work)?;
        let args = [
            "scripts/bench_sample.py",
            "--make-model",
            &model.to_string_lossy(),
            "--layout",
            &o.layout,
        ];
        crate::py::run(&args.map(String::from))?;
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            &o.profile,
            "--package",
            "sampler",
            "--bin",
            "sampler",
        ])
        .status()?;
    if !status.success() {
        bail!("building the sampler failed");
    }
    let dir = if o.profile == "dev" {
        "debug"
    } else {
        o.profile.as_str()
    };
    let ours_bin = root.join("target").join(dir).join("sampler");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let n = o.num_images.to_string();
    let mut ours = Vec::new();
    let mut peer = Vec::new();
    for round in 0..o.rounds {
        let out = Command::new(&ours_bin)
            .args([
                "--model",
                &model.to_string_lossy(),
                "--sampler",
                "dpm++2m",
                "--steps",
                "20",
            ])
            .args([
                "--num-images",
                &n,
                "--batch-size",
                &n,
                "--device",
                "cpu",
                "--seed",
                "0",
            ])
            .arg("--out")
            .arg(work.join("out"))
            .env("RUST_LOG", "warn")
            .output()
            .context("running the sampler")?;
        if !out.status.success() {
            bail!("sampler failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        ours.push(o.num_images as f64 / summary_seconds(&String::from_utf8_lossy(&out.stdout))?);
        let args = [
            "scripts/bench_sample.py",
            "--model",
            &model.to_string_lossy(),
            "--steps",
            "20",
            "--num-images",
            &n,
            "--threads",
            &threads.to_string(),
        ]
        .map(String::from);
        let out = crate::py::command(&args)?
            .output()
            .context("running python")?;
        if !out.status.success() {
            bail!(
                "diffusers benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        peer.push(img_per_s(&String::from_utf8_lossy(&out.stdout))?);
        println!(
            "round {}: ours {:.1} img/s, diffusers {:.1} img/s",
            round + 1,
            ours[round],
            peer[round]
        );
    }
    let (a, b) = (median(&mut ours), median(&mut peer));
    println!();
    println!(
        "| {} layout, {} images, 20 steps dpm++2m, {threads} threads, {} build | img/s |",
        o.layout, n, o.profile
    );
    println!("| --- | --- |");
    println!("| ours (sampler) | {a:.2} |");
    println!("| diffusers 0.42.1, eager | {b:.2} |");
    println!("| ours / diffusers | {:.2}x |", a / b);
    let json = format!(
        "{{\"layout\":\"{}\",\"images\":{},\"threads\":{threads},\"ours_img_per_s\":{a},\"diffusers_img_per_s\":{b},\"ratio\":{}}}\n",
        o.layout,
        o.num_images,
        a / b
    );
    std::fs::write(work.join("results.json"), json)?;
    println!("\nwritten to {}", work.join("results.json").display());
    Ok(())
}

fn img_per_s(stdout: &str) -> Result<f64> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("img_per_s"))
        .context("no result line from python")?;
    let value = line
        .split("\"img_per_s\":")
        .nth(1)
        .context("no img_per_s field")?;
    let value = value.split([',', '}']).next().unwrap_or("").trim();
    value
        .parse()
        .with_context(|| format!("img_per_s {value:?}"))
}

/// Seconds from the sampler's summary line: "sampled N images ... in X s; ...".
fn summary_seconds(stdout: &str) -> Result<f64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sampled "))
        .context("no summary line from the sampler")?;
    let after = line.rsplit_once(" in ").context("summary without time")?.1;
    let value = after.split_whitespace().next().unwrap_or("");
    value
        .parse()
        .with_context(|| format!("seconds {value:?} in {line:?}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
