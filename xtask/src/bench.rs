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

use crate::flags::{self, is_help, Flags, Parsed};

pub const USAGE: &str = "\
usage: cargo xtask bench [speed|scaling|sample|text|data] [flags]

  speed (default)  lmzh bench against diffusers, train and sample, fp32 and bf16:
                   img/s, GFLOP/s, peak RSS; JSON in target/bench/
                   [--layouts grey32,ddpm-cifar10] [--rounds N] [--device cpu|cuda] [--no-peer]
  scaling          ours at 32/64/128 px and batch 16/64/256 (same flags as speed)
  sample           our dpm++2m sampler against diffusers on the same weights
                   [--layout default|cifar10] [--num-images N] [--rounds R] [--profile P]
  text             the text-to-image loop (Stable Diffusion 1.5's U-Net) against diffusers:
                   s/image and peak RSS [--size 256] [--steps 4] [--layout sd15|sd-tiny]
  data             loader throughput against the trainer's consumption

`cargo xtask bench NAME --help` shows one benchmark's flags.
";

const DATA_USAGE: &str = "\
usage: cargo xtask bench data

Loader throughput (decode + augment + batch) on the bundled IDX digits and on
a folder of 32x32 PNGs, then the loader against the default training preset's
consumption (criterion benches data-pipeline/loader and trainer/data_vs_train).
";

/// One benchmark with its options.
#[derive(Debug, PartialEq)]
pub enum Task {
    Speed(crate::bench_speed::Options),
    Sample(crate::bench_sample::Options),
    Text(crate::bench_text::Options),
    Data,
}

pub fn parse(args: &[String]) -> Result<Parsed<Task>> {
    let rest = args.get(1..).unwrap_or(&[]);
    match args.first().map(String::as_str) {
        Some(a) if is_help(a) => Ok(Parsed::Help(USAGE)),
        None => Ok(crate::bench_speed::parse(&[], false)?.map(Task::Speed)),
        Some(a) if a.starts_with('-') => {
            Ok(crate::bench_speed::parse(args, false)?.map(Task::Speed))
        }
        Some("speed") => Ok(crate::bench_speed::parse(rest, false)?.map(Task::Speed)),
        Some("scaling") => Ok(crate::bench_speed::parse(rest, true)?.map(Task::Speed)),
        Some("sample") => Ok(crate::bench_sample::parse(rest)?.map(Task::Sample)),
        Some("text") => Ok(crate::bench_text::parse(rest)?.map(Task::Text)),
        Some("data") => Ok(flags::none("bench data", DATA_USAGE, rest)?.map(|()| Task::Data)),
        Some(other) => Err(Flags::new("bench", USAGE, args).error(&format!(
            "unknown benchmark {other:?}; available: speed, scaling, sample, text, data"
        ))),
    }
}

pub fn run(task: &Task) -> Result<()> {
    match task {
        Task::Speed(o) => crate::bench_speed::run(o),
        Task::Sample(o) => crate::bench_sample::run(o),
        Task::Text(o) => crate::bench_text::run(o),
        Task::Data => {
            for (package, bench) in [("data-pipeline", "loader"), ("trainer", "data_vs_train")] {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Parsed<Task>> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn every_level_answers_help() {
        for s in [
            "--help",
            "-h",
            "help",
            "--rounds 2 --help",
            "--rounds --help",
        ] {
            assert!(
                matches!(parse_str(s).unwrap(), Parsed::Help(u) if u.contains("bench")),
                "{s}"
            );
        }
        for (s, needle) in [
            ("speed --help", "[speed|scaling]"),
            ("scaling -h", "[speed|scaling]"),
            ("sample help", "bench sample"),
            ("text --help", "bench text"),
            ("sample --layout --help", "bench sample"),
            ("data --help", "bench data"),
        ] {
            match parse_str(s).unwrap() {
                Parsed::Help(u) => assert!(u.contains(needle), "{s}: {u}"),
                Parsed::Run(t) => panic!("{s}: {t:?}"),
            }
        }
    }

    #[test]
    fn benchmarks_and_their_flags_parse() {
        let Parsed::Run(Task::Speed(o)) = parse_str("").unwrap() else {
            panic!()
        };
        assert_eq!((o.rounds, o.device.as_str(), o.peer), (3, "cpu", true));
        let Parsed::Run(Task::Speed(o)) =
            parse_str("--device cuda --rounds 1 --no-peer --layouts grey32").unwrap()
        else {
            panic!()
        };
        assert_eq!((o.rounds, o.device.as_str(), o.peer), (1, "cuda", false));
        assert_eq!(o.layouts, ["grey32"]);
        let Parsed::Run(Task::Speed(o)) = parse_str("scaling").unwrap() else {
            panic!()
        };
        assert!(o.scaling);
        let Parsed::Run(Task::Sample(o)) = parse_str("sample --num-images 8").unwrap() else {
            panic!()
        };
        assert_eq!((o.num_images, o.rounds), (8, 3));
        assert_eq!(parse_str("data").unwrap(), Parsed::Run(Task::Data));
    }

    #[test]
    fn unknown_benchmarks_and_flags_are_errors_with_the_usage() {
        for (s, needle) in [
            ("speedy", "unknown benchmark \"speedy\""),
            ("--rounds", "--rounds needs a value"),
            ("--rounds x", "--rounds \"x\" is not a valid value"),
            ("--rounds 0", "at least 1"),
            ("speed --frobnicate", "unknown flag \"--frobnicate\""),
            ("sample --layout", "--layout needs a value"),
            ("sample extra", "unexpected argument \"extra\""),
            ("data --fast", "unknown flag \"--fast\""),
        ] {
            let err = parse_str(s).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("usage:"), "{s}: {err}");
        }
    }
}
