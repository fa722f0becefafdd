//! `cargo xtask`: project automation that needs nothing but Rust and Python.
//!
//! - `setup`  install the pinned libtorch (PyPI wheel `torch==2.11.0`) into a
//!   per-machine cache and link it into the workspace as `.libtorch`;
//! - `doctor` check that the binaries find that libtorch and really load CUDA;
//! - `tidy`   repository rules, one feature set for shared dependencies;
//! - `ci`     setup, then every check CI runs, cheapest first;
//! - `bench`  benchmarks in release mode;
//! - `fuzz`   every loader under hostile bytes;
//! - `gpu-check` doctor, parity, bench and NCCL on a CUDA machine;
//! - `data`   install or locate a benchmark data set;
//! - `py`     run a reference script with PyTorch + diffusers (fixtures only).
//!
//! Every command answers `--help`, `-h` and `help` with its usage. This
//! crate never links tch, so it builds before libtorch exists.

mod bench;
mod bench_sample;
mod bench_speed;
mod bench_text;
mod ci;
mod data;
mod doctor;
mod features;
mod flags;
mod fuzz;
mod gpu_check;
mod py;
mod setup;
mod tidy;

use std::path::PathBuf;

use anyhow::Result;

use flags::{is_help, Flags, Parsed};

const USAGE: &str = "\
usage: cargo xtask <command> [flags]     (cargo xtask <command> --help: its flags)

commands:
  setup [--force]   install libtorch 2.11.0 (PyPI torch wheel) once per machine into
                    $LMZH_CACHE_DIR or $XDG_CACHE_HOME/lmzh or ~/.cache/lmzh, and link it
                    as .libtorch; respects a LIBTORCH you set yourself
  doctor            check libtorch path, version and pins, rpath, CUDA linking and devices
  tidy              repository rules: crate docs, lints, file sizes, module use cycles,
                    one feature set for the dependencies every build shares
  ci                setup if needed, then tidy, fmt, clippy, tests, docs, doctor
  bench [speed|scaling|sample|text|data] [flags]
                    speed (default): lmzh bench against diffusers, train and sample,
                    fp32 and bf16, img/s, GFLOP/s, peak RSS; scaling: ours at 32/64/128 px;
                    sample: our dpm++2m sampler against diffusers; data: loader throughput
  fuzz [--full] [--cases N] [FILTER...]
                    every loader (safetensors, IDX, CIFAR-10, images, configs, model
                    folders, checkpoints) under hostile bytes; --full: 1,000,000 each
  gpu-check [--allow-cpu] [--prepare DIR | --prebuilt DIR]
                    on a CUDA machine: doctor, U-Net and solver parity on CUDA, bench,
                    2-process NCCL, with a summary table
  data NAME [--url BASE]
                    install or locate fashion-mnist, mnist or cifar10 (into the cache)
  py SCRIPT [ARGS]  run a reference script (scripts/*.py) with torch and diffusers,
                    installed once per machine; only fixture generation needs it
  help [COMMAND]    this text, or a command's
";

const SETUP_USAGE: &str = "\
usage: cargo xtask setup [--force]

Installs libtorch 2.11.0 (the PyPI wheel torch==2.11.0) once per machine into
$LMZH_CACHE_DIR (default $XDG_CACHE_HOME/lmzh or ~/.cache/lmzh) and links it
into the workspace as .libtorch; a LIBTORCH you set is checked and linked
instead. A second run does nothing; --force installs again.
";

const DOCTOR_USAGE: &str = "\
usage: cargo xtask doctor

Checks the libtorch path and version, the tch/torch-sys pins, the rpath and
libtorch_cuda.so linking of the built lmzh, and runs `lmzh doctor` as a user
would; each problem comes with its one-line fix.
";

const TIDY_USAGE: &str = "\
usage: cargo xtask tidy

Repository rules rustc and clippy do not check: crate docs, workspace lints,
file sizes, module use cycles, and one feature set for the dependencies of
tensor in every build and test selection (so tch compiles once).
";

const CI_USAGE: &str = "\
usage: cargo xtask ci

What CI runs, cheapest first, stopping at the first failure: setup if
needed, tidy, fmt, clippy -D warnings, tests (nextest when installed; the
fuzz tests run 3,000 inputs per loader there), docs, doctor.
";

/// A command line, parsed.
#[derive(Debug, PartialEq)]
enum Task {
    Setup { force: bool },
    Doctor,
    Tidy,
    Ci,
    Bench(bench::Task),
    Fuzz(fuzz::Options),
    GpuCheck(gpu_check::Options),
    Data(data::Options),
    Py(Vec<String>),
}

fn parse(args: &[String]) -> Result<Parsed<Task>> {
    let Some((cmd, rest)) = args.split_first() else {
        return Ok(Parsed::Help(USAGE));
    };
    match cmd.as_str() {
        "setup" => {
            let mut f = Flags::new("setup", SETUP_USAGE, rest);
            if f.wants_help() {
                return Ok(f.help());
            }
            let mut force = false;
            while let Some(a) = f.next() {
                match a {
                    "--force" => force = true,
                    other => return Err(f.unknown(other)),
                }
            }
            Ok(Parsed::Run(Task::Setup { force }))
        }
        "doctor" => Ok(flags::none("doctor", DOCTOR_USAGE, rest)?.map(|()| Task::Doctor)),
        "tidy" => Ok(flags::none("tidy", TIDY_USAGE, rest)?.map(|()| Task::Tidy)),
        "ci" => Ok(flags::none("ci", CI_USAGE, rest)?.map(|()| Task::Ci)),
        "bench" => Ok(bench::parse(rest)?.map(Task::Bench)),
        "fuzz" => Ok(fuzz::parse(rest)?.map(Task::Fuzz)),
        "gpu-check" => Ok(gpu_check::parse(rest)?.map(Task::GpuCheck)),
        "data" => Ok(data::parse(rest)?.map(Task::Data)),
        "py" => Ok(py::parse(rest)?.map(Task::Py)),
        c if is_help(c) => match rest.first() {
            None => Ok(Parsed::Help(USAGE)),
            // `cargo xtask help bench` is `cargo xtask bench --help`.
            Some(topic) if !is_help(topic) => {
                let mut again = rest.to_vec();
                again.push("--help".to_string());
                parse(&again)
            }
            Some(_) => Ok(Parsed::Help(USAGE)),
        },
        other => Err(Flags::new("", USAGE, args).error(&format!("unknown command {other:?}"))),
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|parsed| match parsed {
        Parsed::Help(usage) => {
            print!("{usage}");
            Ok(())
        }
        Parsed::Run(task) => run(task),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    match task {
        Task::Setup { force } => setup::run(force).map(|_| ()),
        Task::Doctor => doctor::run(),
        Task::Tidy => tidy::run(),
        Task::Ci => ci::run(),
        Task::Bench(t) => bench::run(&t),
        Task::Fuzz(o) => fuzz::run(&o),
        Task::GpuCheck(o) => gpu_check::run(&o),
        Task::Data(o) => data::run(&o),
        Task::Py(args) => py::run(&args),
    }
}

/// The workspace root (the folder of the virtual manifest).
fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Parsed<Task>> {
        let args: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn usage_of(s: &str) -> &'static str {
        match parse_str(s) {
            Ok(Parsed::Help(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn every_command_answers_help_in_every_spelling() {
        assert_eq!(usage_of(""), USAGE);
        for spelling in ["help", "--help", "-h"] {
            assert_eq!(usage_of(spelling), USAGE);
        }
        for (cmd, needle) in [
            ("setup", "xtask setup [--force]"),
            ("doctor", "xtask doctor"),
            ("tidy", "xtask tidy"),
            ("ci", "xtask ci"),
            ("bench", "xtask bench [speed|scaling|sample|text|data]"),
            ("bench text", "xtask bench text"),
            ("bench speed", "xtask bench [speed|scaling]"),
            ("bench scaling", "xtask bench [speed|scaling]"),
            ("bench sample", "xtask bench sample"),
            ("bench data", "xtask bench data"),
            ("fuzz", "xtask fuzz"),
            ("gpu-check", "xtask gpu-check"),
            ("data", "xtask data NAME"),
            ("py", "xtask py SCRIPT"),
        ] {
            for spelling in ["--help", "-h", "help"] {
                let u = usage_of(&format!("{cmd} {spelling}"));
                assert!(u.contains(needle), "{cmd} {spelling}: {u}");
            }
            // `cargo xtask help CMD` is the same text.
            assert_eq!(
                usage_of(&format!("help {cmd}")),
                usage_of(&format!("{cmd} --help"))
            );
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse_str("setup --force").unwrap(),
            Parsed::Run(Task::Setup { force: true })
        );
        assert_eq!(parse_str("tidy").unwrap(), Parsed::Run(Task::Tidy));
        assert_eq!(
            parse_str("py scripts/x.py --help").unwrap(),
            Parsed::Run(Task::Py(vec!["scripts/x.py".into(), "--help".into()]))
        );
        assert!(matches!(
            parse_str("gpu-check --allow-cpu").unwrap(),
            Parsed::Run(Task::GpuCheck(o)) if o.allow_cpu
        ));
        assert!(matches!(
            parse_str("fuzz --full").unwrap(),
            Parsed::Run(Task::Fuzz(o)) if o.cases == 1_000_000
        ));
    }

    #[test]
    fn unknown_commands_and_flags_are_errors_with_the_usage() {
        for (s, needle, usage) in [
            ("frobnicate", "unknown command \"frobnicate\"", "commands:"),
            (
                "help frobnicate",
                "unknown command \"frobnicate\"",
                "commands:",
            ),
            ("setup --fast", "unknown flag \"--fast\"", "xtask setup"),
            ("doctor now", "unexpected argument \"now\"", "xtask doctor"),
            ("ci --quick", "unknown flag \"--quick\"", "xtask ci"),
            ("bench --device", "--device needs a value", "xtask bench"),
            ("py", "SCRIPT is missing", "xtask py"),
            ("py --x", "unknown flag \"--x\"", "xtask py"),
        ] {
            let err = parse_str(s).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(usage), "{s}: {err}");
        }
    }
}
