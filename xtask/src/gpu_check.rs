//! `cargo xtask gpu-check`: on a machine with CUDA and libtorch 2.11
//! (torch 2.11.0+cu130), everything a GPU changes, in one run, with a
//! summary table at the end.
//!
//! 1. `cargo xtask doctor` (with `--prebuilt`: the prebuilt `lmzh doctor`);
//!    it also says whether libtorch sees CUDA: without it, stop with an
//!    error, unless `--allow-cpu` (the same steps on the CPU, to try the
//!    command anywhere);
//! 2. the build: `lmzh` and the three test binaries below, release
//!    (`--dev`: the test profile), or nothing with `--prebuilt DIR`;
//! 3. the U-Net parity suite on CUDA (`LMZH_TEST_DEVICE=cuda`: relative L2
//!    error against diffusers <= 1e-2; 1e-4 on the CPU);
//! 4. the solver parity suite on CUDA (<= 5e-3; 1e-3 on the CPU);
//! 5. `cargo xtask bench --device cuda --rounds 1 --no-peer` (ours only;
//!    `--with-peer` adds diffusers, which needs Python and its packages);
//! 6. the 2-process NCCL test when there are two GPUs, else a note (on the
//!    CPU: the 2-process Gloo test).
//!
//! A GPU machine's time is short: `--prepare DIR` builds the binaries here
//! and copies them into DIR; `--prebuilt DIR` there runs them without
//! building anything (libtorch from `$LIBTORCH` or `.libtorch`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::flags::{Flags, Parsed};

pub const USAGE: &str = "\
usage: cargo xtask gpu-check [--allow-cpu] [--dev] [--with-peer] [--no-bench]
                             [--prepare DIR | --prebuilt DIR]

On a machine with an NVIDIA GPU and libtorch 2.11 with CUDA (torch 2.11.0+cu130),
one run, then a summary table:
  doctor        cargo xtask doctor (with --prebuilt: DIR/lmzh doctor); no CUDA: stop
  build         release lmzh and test binaries (skipped with --prebuilt)
  unet parity   the U-Net against diffusers on CUDA, relative L2 <= 1e-2
  solver parity every solver against diffusers on CUDA, relative L2 <= 5e-3
  bench         cargo xtask bench --device cuda --rounds 1 --no-peer
  nccl          the 2-process NCCL test, when there are 2 GPUs

  --allow-cpu   no GPU: run the same steps on the CPU (tolerances 1e-4 and 1e-3;
                the 2-process Gloo test instead of NCCL)
  --dev         the test profile instead of release (reuses `cargo test` builds)
  --with-peer   bench diffusers too (needs Python with torch and diffusers)
  --no-bench    skip the bench step
  --prepare DIR build here and copy lmzh and the test binaries into DIR
  --prebuilt DIR run the binaries of DIR (from --prepare); builds nothing

Budget: on a 16-core GPU machine the release build takes minutes; to spend
device time on the run alone, `--prepare target/gpu-check` on a build machine
with the same libtorch, carry the folder, and `--prebuilt target/gpu-check`.
";

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Options {
    pub allow_cpu: bool,
    pub dev: bool,
    pub peer: bool,
    pub bench: bool,
    pub prepare: Option<PathBuf>,
    pub prebuilt: Option<PathBuf>,
}

pub fn parse(args: &[String]) -> Result<Parsed<Options>> {
    let mut f = Flags::new("gpu-check", USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut o = Options {
        bench: true,
        ..Options::default()
    };
    while let Some(a) = f.next() {
        match a {
            "--allow-cpu" => o.allow_cpu = true,
            "--dev" => o.dev = true,
            "--with-peer" => o.peer = true,
            "--no-bench" => o.bench = false,
            "--prepare" => o.prepare = Some(f.value(a)?.into()),
            "--prebuilt" => o.prebuilt = Some(f.value(a)?.into()),
            other => return Err(f.unknown(other)),
        }
    }
    if o.prepare.is_some() && o.prebuilt.is_some() {
        return Err(f.error("--prepare and --prebuilt exclude each other"));
    }
    Ok(Parsed::Run(o))
}

/// The binaries a check runs.
#[derive(Debug)]
struct Bins {
    lmzh: PathBuf,
    unet_parity: PathBuf,
    sampler_parity: PathBuf,
    distributed: PathBuf,
}

/// Their names in a `--prepare` folder.
const NAMES: [&str; 4] = [
    "lmzh",
    "unet-parity",
    "sampler-parity",
    "tensor-distributed",
];

impl Bins {
    fn in_dir(dir: &Path) -> Result<Bins> {
        let file = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!(
                    "{} is missing: make the folder with `cargo xtask gpu-check --prepare {}`",
                    p.display(),
                    dir.display()
                );
            }
            Ok(p)
        };
        Ok(Bins {
            lmzh: file(NAMES[0])?,
            unet_parity: file(NAMES[1])?,
            sampler_parity: file(NAMES[2])?,
            distributed: file(NAMES[3])?,
        })
    }

    fn all(&self) -> [&Path; 4] {
        [
            &self.lmzh,
            &self.unet_parity,
            &self.sampler_parity,
            &self.distributed,
        ]
    }

    /// `cargo build` of `lmzh` and `cargo test --no-run` of the three
    /// suites, reading the executables from Cargo's JSON messages.
    fn build(root: &Path, dev: bool) -> Result<Bins> {
        let profile = if dev { "dev" } else { "release" };
        let lmzh = executables(
            root,
            &["build", "--profile", profile, "-p", "cli", "--bin", "lmzh"],
        )?;
        let tests = executables(
            root,
            &[
                "test",
                "--profile",
                if dev { "test" } else { "release" },
                "--no-run",
                "-p",
                "unet",
                "-p",
                "sampler",
                "-p",
                "tensor",
                "--test",
                "parity",
                "--test",
                "distributed",
            ],
        )?;
        let find = |list: &[(String, String, PathBuf)], package: &str, target: &str| {
            list.iter()
                .find(|(p, t, _)| p == package && t == target)
                .map(|(_, _, e)| e.clone())
                .with_context(|| format!("cargo built no {package}/{target}"))
        };
        Ok(Bins {
            lmzh: find(&lmzh, "cli", "lmzh")?,
            unet_parity: find(&tests, "unet", "parity")?,
            sampler_parity: find(&tests, "sampler", "parity")?,
            distributed: find(&tests, "tensor", "distributed")?,
        })
    }
}

/// (package folder, target, executable) of every executable a cargo
/// command builds.
fn executables(root: &Path, args: &[&str]) -> Result<Vec<(String, String, PathBuf)>> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), out.status);
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(m) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(exe), Some(manifest)) = (m["executable"].as_str(), m["manifest_path"].as_str())
        else {
            continue;
        };
        let package = Path::new(manifest)
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = m["target"]["name"].as_str().unwrap_or("").to_string();
        found.push((package, target, PathBuf::from(exe)));
    }
    Ok(found)
}

/// One row of the summary.
#[derive(Debug)]
struct Row {
    step: &'static str,
    /// `None`: skipped.
    ok: Option<bool>,
    seconds: f64,
    detail: String,
}

struct Report(Vec<Row>);

impl Report {
    /// Runs a step, recording its outcome and time; `f` returns the detail.
    fn step(&mut self, step: &'static str, f: impl FnOnce() -> Result<String>) -> bool {
        println!("\n==> {step}");
        let t = Instant::now();
        let (ok, detail) = match f() {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        println!("==> {step}: {}", if ok { "ok" } else { "FAILED" });
        self.0.push(Row {
            step,
            ok: Some(ok),
            seconds: t.elapsed().as_secs_f64(),
            detail,
        });
        ok
    }

    fn skip(&mut self, step: &'static str, why: String) {
        println!("\n==> {step}: skipped ({why})");
        self.0.push(Row {
            step,
            ok: None,
            seconds: 0.0,
            detail: why,
        });
    }

    fn print(&self, device: &str, started: Instant) {
        println!("\n| step | result | seconds | detail |");
        println!("| --- | --- | ---: | --- |");
        for r in &self.0 {
            let result = match r.ok {
                Some(true) => "ok",
                Some(false) => "FAILED",
                None => "skipped",
            };
            let detail = r.detail.lines().next().unwrap_or("").replace('|', "/");
            println!("| {} | {result} | {:.0} | {detail} |", r.step, r.seconds);
        }
        println!(
            "\ngpu-check on {device}: {:.0} s in all",
            started.elapsed().as_secs_f64()
        );
    }

    fn failures(&self) -> usize {
        self.0.iter().filter(|r| r.ok == Some(false)).count()
    }
}

/// `PATH`-style prepend.
fn prepend(var: &str, dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os(var) {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

/// Runs a binary of the check with libtorch's `lib/` on the library path
/// (prebuilt binaries carry the rpath of the machine that built them);
/// prints and returns its output, an error when it fails.
fn run_bin(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    libtorch: Option<&Path>,
) -> Result<String> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(lt) = libtorch {
        cmd.env(
            "LD_LIBRARY_PATH",
            prepend("LD_LIBRARY_PATH", &lt.join("lib")),
        );
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{text}");
    if !out.status.success() {
        bail!(
            "{} {} failed ({})",
            bin.display(),
            args.join(" "),
            out.status
        );
    }
    Ok(text)
}

/// CUDA devices as `lmzh doctor` reports them (`CUDA  available, N
/// device(s)`), 0 when it reports none.
pub fn cuda_devices(doctor_report: &str) -> usize {
    doctor_report
        .lines()
        .filter_map(|l| l.strip_prefix("CUDA"))
        .filter_map(|l| l.trim().strip_prefix("available, "))
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The last line of `text` that starts with `prefix`.
fn last_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().rev().find(|l| l.starts_with(prefix))
}

fn libtorch(root: &Path) -> Option<PathBuf> {
    std::env::var_os("LIBTORCH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".libtorch")))
        .and_then(|p| p.canonicalize().ok())
}

pub fn run(o: &Options) -> Result<()> {
    let root = crate::workspace_root();
    if let Some(dir) = &o.prepare {
        return prepare(&root, dir, o.dev);
    }
    let started = Instant::now();
    let mut report = Report(Vec::new());
    let libtorch = libtorch(&root);
    let prebuilt = o.prebuilt.as_deref().map(Bins::in_dir).transpose()?;

    // 1. doctor, and what it says about CUDA.
    let mut doctor_text = String::new();
    let doctor_ok = report.step("doctor", || match &prebuilt {
        Some(b) => {
            doctor_text = run_bin(&b.lmzh, &["doctor"], &[], libtorch.as_deref())?;
            Ok("lmzh doctor (prebuilt)".into())
        }
        None => {
            crate::doctor::run()?;
            let lmzh = crate::doctor::target_dir(&root).join("debug/lmzh");
            doctor_text = run_bin(&lmzh, &["doctor"], &[], None)?;
            Ok("cargo xtask doctor".into())
        }
    });
    let gpus = cuda_devices(&doctor_text);
    let device = if gpus > 0 { "cuda" } else { "cpu" };
    if gpus == 0 && !o.allow_cpu {
        report.print("no GPU", started);
        let why = if doctor_ok {
            "libtorch reports CUDA not available".to_string()
        } else {
            "the doctor step failed, so CUDA could not be checked".to_string()
        };
        bail!(
            "gpu-check needs CUDA: {why} (nvidia-smi: {}). Run it on a machine with an \
             NVIDIA GPU and libtorch 2.11 with CUDA (torch 2.11.0+cu130, `cargo xtask \
             setup`), or pass --allow-cpu to run the same steps on the CPU",
            nvidia_smi()
        );
    }
    println!("\ngpu-check: {gpus} CUDA device(s); the suites run on {device}");

    // 2. the binaries
    let bins = match prebuilt {
        Some(b) => {
            report.skip(
                "build",
                format!("prebuilt in {}", o.prebuilt.as_ref().unwrap().display()),
            );
            b
        }
        None => {
            let mut built = None;
            let profile = if o.dev { "test profile" } else { "release" };
            report.step("build", || {
                built = Some(Bins::build(&root, o.dev)?);
                Ok(format!("lmzh and 3 test binaries, {profile}"))
            });
            match built {
                Some(b) => b,
                None => {
                    report.print(device, started);
                    bail!("the build failed");
                }
            }
        }
    };
    let crate_dir = |c: &str| root.join("crates").join(c).to_string_lossy().into_owned();
    let lt = libtorch.as_deref();

    // 3, 4. parity
    let unet_dir = crate_dir("unet");
    report.step("unet parity", || {
        let out = run_bin(
            &bins.unet_parity,
            &["--test-threads=1", "--nocapture"],
            &[
                ("LMZH_TEST_DEVICE", device),
                ("CARGO_MANIFEST_DIR", &unet_dir),
            ],
            lt,
        )?;
        Ok(last_line(&out, "worst relative L2 error")
            .unwrap_or("passed")
            .to_string())
    });
    let sampler_dir = crate_dir("sampler");
    report.step("solver parity", || {
        let out = run_bin(
            &bins.sampler_parity,
            &["--test-threads=1", "--nocapture"],
            &[
                ("LMZH_TEST_DEVICE", device),
                ("CARGO_MANIFEST_DIR", &sampler_dir),
            ],
            lt,
        )?;
        Ok(last_line(&out, "worst relative L2 error")
            .unwrap_or("passed")
            .to_string())
    });

    // 5. bench
    if o.bench {
        let layouts = if gpus > 0 {
            vec!["grey32".to_string(), "ddpm-cifar10".to_string()]
        } else {
            vec!["grey32".to_string()]
        };
        let opts = crate::bench_speed::Options {
            layouts,
            rounds: 1,
            device: device.to_string(),
            scaling: false,
            peer: o.peer,
            lmzh: Some(bins.lmzh.clone()),
        };
        report.step("bench", || {
            if let Some(lt) = lt {
                // For a prebuilt lmzh, which carries another machine's rpath.
                std::env::set_var(
                    "LD_LIBRARY_PATH",
                    prepend("LD_LIBRARY_PATH", &lt.join("lib")),
                );
            }
            crate::bench_speed::run(&opts)?;
            Ok(format!(
                "{} layout(s), 1 round, {}; table above, JSON in target/bench/speed.json",
                opts.layouts.len(),
                if o.peer {
                    "with diffusers"
                } else {
                    "ours only"
                }
            ))
        });
    } else {
        report.skip("bench", "--no-bench".into());
    }

    // 6. NCCL (or Gloo on the CPU)
    if gpus >= 2 {
        report.step("nccl", || {
            let out = run_bin(
                &bins.distributed,
                &["--exact", "nccl_collectives_across_two_gpus", "--nocapture"],
                &[],
                lt,
            )?;
            let line = last_line(&out, "NCCL: ").unwrap_or("NCCL: no report");
            if line.starts_with("NCCL: skipped") {
                bail!("{line}");
            }
            Ok(line.to_string())
        });
    } else if gpus == 1 {
        report.skip(
            "nccl",
            "1 GPU: the 2-process NCCL test needs 2 (run it where there are two)".into(),
        );
    } else {
        report.step("nccl", || {
            run_bin(
                &bins.distributed,
                &[
                    "--exact",
                    "all_reduce_broadcast_and_barrier_across_two_processes",
                    "--nocapture",
                ],
                &[],
                lt,
            )?;
            Ok("no GPU: the 2-process Gloo test instead".into())
        });
    }

    report.print(
        if gpus > 0 {
            "CUDA"
        } else {
            "the CPU (--allow-cpu)"
        },
        started,
    );
    let failed = report.failures();
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}

fn nvidia_smi() -> String {
    match Command::new("nvidia-smi").arg("-L").output() {
        Ok(out) if out.status.success() => {
            let n = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count();
            format!("lists {n} GPU(s)")
        }
        Ok(_) => "fails".into(),
        Err(_) => "not installed".into(),
    }
}

/// `--prepare DIR`: build, then copy the binaries into DIR (without their
/// debug info where `strip` is there, so the folder travels light).
fn prepare(root: &Path, dir: &Path, dev: bool) -> Result<()> {
    let bins = Bins::build(root, dev)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut total = 0;
    for (src, name) in bins.all().into_iter().zip(NAMES) {
        let dest = dir.join(name);
        let stripped = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(src)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(src, &dest)
                .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
        }
        let size = std::fs::metadata(&dest)?.len();
        total += size;
        println!("{:>8.1} MB  {}", size as f64 / 1e6, dest.display());
    }
    println!(
        "{:>8.1} MB in all. On the GPU machine (the same checkout, libtorch 2.11 with CUDA at \
         $LIBTORCH or .libtorch): cargo xtask gpu-check --prebuilt {}",
        total as f64 / 1e6,
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_devices_are_read_from_the_doctor_report() {
        let report = "libtorch version   2.11.0+cu130\nCUDA               available, 2 device(s)\n";
        assert_eq!(cuda_devices(report), 2);
        assert_eq!(
            cuda_devices("CUDA               not available: CPU only\n"),
            0
        );
        assert_eq!(cuda_devices(""), 0);
    }

    #[test]
    fn flags_parse_and_conflicts_are_errors() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let Parsed::Run(o) = parse(&args("--allow-cpu --dev --prebuilt x")).unwrap() else {
            panic!()
        };
        assert!(o.allow_cpu && o.dev && o.bench && !o.peer);
        assert_eq!(o.prebuilt.as_deref(), Some(Path::new("x")));
        for s in ["--help", "-h", "help", "--prebuilt --help"] {
            assert_eq!(parse(&args(s)).unwrap(), Parsed::Help(USAGE), "{s}");
        }
        for (s, needle) in [
            ("--prepare a --prebuilt b", "exclude each other"),
            ("--prebuilt", "--prebuilt needs a value"),
            ("--gpu", "unknown flag \"--gpu\""),
        ] {
            let err = parse(&args(s)).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("usage:"), "{s}: {err}");
        }
    }
}
