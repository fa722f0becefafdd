//! `cargo xtask`: project automation that needs nothing but Rust and Python.
//!
//! - `setup`  install the pinned libtorch (PyPI wheel `torch==2.11.0`) into a
//!   per-machine cache and link it into the workspace as `.libtorch`;
//! - `doctor` check that the binaries find that libtorch and really load CUDA;
//! - `ci`     setup, then every check CI runs, cheapest first;
//! - `bench`  benchmarks in release mode;
//! - `data`   install or locate a benchmark data set;
//! - `py`     run a reference script with PyTorch + diffusers (fixtures only).
//!
//! This crate never links tch, so it builds before libtorch exists.

mod bench;
mod bench_sample;
mod bench_speed;
mod ci;
mod data;
mod doctor;
mod features;
mod py;
mod setup;
mod tidy;

use std::path::PathBuf;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command> [flags]

commands:
  setup [--force]   install libtorch 2.11.0 (PyPI torch wheel) once per machine into
                    $LMZH_CACHE_DIR or $XDG_CACHE_HOME/lmzh or ~/.cache/lmzh, and link it
                    as .libtorch; respects a LIBTORCH you set yourself
  doctor            check libtorch path, version and pins, rpath, CUDA linking and devices
  tidy              repository rules: crate docs, lints, file sizes, module use cycles
  ci                setup if needed, then tidy, fmt, clippy, tests, docs, doctor
  bench [speed|scaling|sample|data] [flags]
                    speed (default): lmzh bench against diffusers, train and sample,
                    fp32 and bf16, img/s, GFLOP/s, peak RSS; JSON in target/bench/
                    ([--layouts grey32,ddpm-cifar10] [--rounds N] [--device cpu|cuda]);
                    scaling: ours at 32/64/128 px and batch 16/64/256;
                    data: loader throughput against the trainer's consumption;
                    sample: our dpm++2m sampler against diffusers on the same weights
                    ([--layout default|cifar10] [--num-images N] [--rounds R] [--profile P])
  data NAME [--url BASE]
                    install or locate fashion-mnist, mnist or cifar10 (into the cache)
  py SCRIPT [ARGS]  run a reference script (scripts/*.py) with torch and diffusers,
                    installed once per machine; only fixture generation needs it
  help              this text
";

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map(|(c, r)| (c.as_str(), r))
        .unwrap_or(("help", &[]));
    match cmd {
        "py" => return py::run(rest),
        "data" => return data::run(rest),
        "bench" => return bench::run(rest),
        _ => {}
    }
    let flag = |name: &str| rest.iter().any(|a| a == name);
    if let Some(unknown) = rest.iter().find(|a| !matches!(a.as_str(), "--force")) {
        bail!("unknown flag {unknown:?} for `cargo xtask {cmd}`\n\n{USAGE}");
    }
    match cmd {
        "setup" => setup::run(flag("--force")).map(|_| ()),
        "doctor" => doctor::run(),
        "tidy" => tidy::run(),
        "ci" => ci::run(),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root (the folder of the virtual manifest).
fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
