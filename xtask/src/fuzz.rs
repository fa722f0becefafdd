//! `cargo xtask fuzz`: every loader under hostile bytes, with a count per
//! loader and a summary table.
//!
//! The fuzz tests are ordinary integration tests (`crates/*/tests/fuzz.rs`
//! on the harness `tests/fuzz_harness.rs`), so `cargo test` and CI run them
//! with 3,000 inputs per loader; this command runs them with more
//! (`--cases N`, or `--full`: 1,000,000) and reads back their counts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::flags::{Flags, Parsed};

/// The crates with a `tests/fuzz.rs`.
pub const CRATES: [&str; 8] = [
    "tensor",
    "data-pipeline",
    "unet",
    "vae",
    "text",
    "schedule",
    "sampler",
    "trainer",
];

pub const USAGE: &str = "\
usage: cargo xtask fuzz [--full] [--cases N] [--seed S] [--release] [FILTER...]

Runs every loader's fuzz test (crates/*/tests/fuzz.rs): safetensors, IDX,
CIFAR-10, image folders, U-Net (pixel and text-conditioned), VAE,
text-encoder and scheduler configs, tokenizer folders, text-encoder
weights, model folders, run.json, training configs and checkpoints.

  --cases N    inputs per loader (default 20000)
  --full       1,000,000 inputs per loader
  --seed S     another input stream (default: one fixed seed per loader)
  --release    release build (default: the test profile, overflow checks on;
               dependencies are optimised in both)
  FILTER       run only the fuzz tests whose name contains it (idx, image,
               tokenizer, ...)

A panicking input is saved under target/tmp/fuzz/ and named in the output;
LMZH_FUZZ_INPUT=/abs/path/to/it cargo test -p CRATE --test fuzz replays it.
";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub cases: u64,
    pub seed: Option<u64>,
    pub release: bool,
    pub filters: Vec<String>,
}

pub fn parse(args: &[String]) -> Result<Parsed<Options>> {
    let mut f = Flags::new("fuzz", USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut o = Options {
        cases: 20_000,
        seed: None,
        release: false,
        filters: Vec::new(),
    };
    while let Some(a) = f.next() {
        match a {
            "--full" => o.cases = 1_000_000,
            "--cases" => o.cases = f.parse(a)?,
            "--seed" => o.seed = Some(f.parse(a)?),
            "--release" => o.release = true,
            other if other.starts_with('-') => return Err(f.unknown(other)),
            filter => o.filters.push(filter.to_string()),
        }
    }
    Ok(Parsed::Run(o))
}

/// One loader's line: `fuzz NAME: N inputs (A accepted, R rejected) in T s
/// (RATE/s), seed S, P panics`.
#[derive(Debug, Clone, PartialEq)]
pub struct Count {
    pub loader: String,
    pub inputs: u64,
    pub accepted: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub panics: u64,
}

pub fn parse_count(line: &str) -> Option<Count> {
    let rest = line.strip_prefix("fuzz ")?;
    let (loader, rest) = rest.split_once(": ")?;
    let num = |s: &str| -> Option<u64> { s.trim().parse().ok() };
    let (inputs, rest) = rest.split_once(" inputs (")?;
    let (accepted, rest) = rest.split_once(" accepted, ")?;
    let (_, rest) = rest.split_once(") in ")?;
    let (seconds, rest) = rest.split_once(" s (")?;
    let (per_second, rest) = rest.split_once("/s)")?;
    let (_, panics) = rest.rsplit_once(", ")?;
    Some(Count {
        loader: loader.to_string(),
        inputs: num(inputs)?,
        accepted: num(accepted)?,
        seconds: seconds.trim().parse().ok()?,
        per_second: per_second.trim().parse().ok()?,
        panics: num(panics.strip_suffix(" panics")?)?,
    })
}

pub fn run(o: &Options) -> Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(crate::workspace_root()).arg("test");
    if o.release {
        cmd.arg("--release");
    }
    for c in CRATES {
        cmd.args(["-p", c]);
    }
    cmd.args(["--test", "fuzz", "--no-fail-fast", "--"])
        .args(&o.filters)
        .arg("--nocapture")
        .env("LMZH_FUZZ_CASES", o.cases.to_string())
        .stdout(Stdio::piped());
    if let Some(seed) = o.seed {
        cmd.env("LMZH_FUZZ_SEED", seed.to_string());
    }
    println!(
        "fuzz: {} inputs per loader, {} build",
        o.cases,
        if o.release { "release" } else { "test" }
    );
    let mut child = cmd.spawn().context("running cargo test")?;
    let mut counts = Vec::new();
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        counts.extend(parse_count(&line));
    }
    let status = child.wait()?;
    println!("\n| loader | inputs | accepted | rejected | panics | seconds | inputs/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for c in &counts {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.0} |",
            c.loader,
            c.inputs,
            c.accepted,
            c.inputs - c.accepted - c.panics,
            c.panics,
            c.seconds,
            c.per_second
        );
    }
    let total: u64 = counts.iter().map(|c| c.inputs).sum();
    println!(
        "\nfuzz: {total} inputs over {} loaders in {:.0} s",
        counts.len(),
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!(
            "a fuzz test failed ({status}): a panic is listed above with its saved input; a \
             loader missing from the table aborted its test binary (look for `asked for one \
             allocation` or a signal above)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_the_harness_line() {
        let line = "fuzz idx: 5005 inputs (250 accepted, 4755 rejected) in 1.0 s (5208/s), \
                    seed 3133923807106418344, 0 panics";
        assert_eq!(
            parse_count(line),
            Some(Count {
                loader: "idx".into(),
                inputs: 5005,
                accepted: 250,
                seconds: 1.0,
                per_second: 5208.0,
                panics: 0
            })
        );
        assert_eq!(
            parse_count("fuzz x: replayed 3 bytes, accepted: true"),
            None
        );
        assert_eq!(parse_count("test idx ... ok"), None);
    }

    #[test]
    fn flags_parse() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let Parsed::Run(o) = parse(&args("--full idx --seed 7")).unwrap() else {
            panic!()
        };
        assert_eq!(
            (o.cases, o.seed, o.filters.as_slice()),
            (1_000_000, Some(7), &["idx".to_string()][..])
        );
        assert_eq!(parse(&args("--cases --help")).unwrap(), Parsed::Help(USAGE));
        let err = parse(&args("--cases")).unwrap_err().to_string();
        assert!(err.contains("--cases needs a value"), "{err}");
        let err = parse(&args("--fast")).unwrap_err().to_string();
        assert!(
            err.contains("unknown flag \"--fast\"") && err.contains("usage:"),
            "{err}"
        );
    }
}
