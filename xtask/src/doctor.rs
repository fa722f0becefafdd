//! `cargo xtask doctor`: is the installation sound?
//!
//! Checks, in order, each failure with a one-line fix:
//! 1. `.libtorch` (or your `LIBTORCH`) exists and is libtorch 2.11.0;
//! 2. the workspace pins `tch` and `torch-sys` to the same 0.24.0;
//! 3. the built `lmzh` carries an rpath to that libtorch and, when libtorch
//!    has CUDA, a NEEDED entry for `libtorch_cuda.so` (the linker's
//!    `--as-needed` drops it otherwise, and CUDA silently reads unavailable);
//! 4. `lmzh doctor`, run from `/` with no `LD_LIBRARY_PATH`, loads libtorch
//!    and reports threads and CUDA devices; where `nvidia-smi` sees a GPU,
//!    libtorch must too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::{self, TCH_VERSION, TORCH_VERSION};

pub fn run() -> Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let root = crate::workspace_root();

    // 1. libtorch
    let libtorch = env_libtorch().unwrap_or_else(setup::link_path);
    let resolved = match libtorch.canonicalize() {
        Ok(p) => p,
        Err(_) => bail!(
            "no libtorch at {}; fix: run `cargo xtask setup`",
            libtorch.display()
        ),
    };
    println!(
        "libtorch           {} -> {}",
        libtorch.display(),
        resolved.display()
    );
    match setup::verify(&resolved) {
        Ok(version) => println!("libtorch version   {version}"),
        Err(e) => problems.push(format!("{e:#}; fix: run `cargo xtask setup`")),
    }

    // 2. pins
    let manifest = fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    let tch = pinned(&manifest, "tch");
    let sys = pinned(&manifest, "torch-sys");
    println!(
        "tch pins           tch ={}, torch-sys ={} (for libtorch {TORCH_VERSION})",
        tch.as_deref().unwrap_or("?"),
        sys.as_deref().unwrap_or("?")
    );
    if tch.as_deref() != Some(TCH_VERSION) || sys.as_deref() != Some(TCH_VERSION) {
        problems.push(format!(
            "Cargo.toml must pin tch = \"={TCH_VERSION}\" and torch-sys = \"={TCH_VERSION}\" \
             together; fix: restore both pins"
        ));
    }

    // 3. build lmzh and read its dynamic section
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--quiet", "--package", "cli", "--bin", "lmzh"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("`cargo build -p cli` failed; fix the build errors above first");
    }
    let lmzh = target_dir(&root).join("debug/lmzh");
    let lib = resolved.join("lib");
    match dynamic_section(&lmzh) {
        Ok(dynamic) => {
            let rpath_ok = dynamic
                .lines()
                .filter(|l| l.contains("RUNPATH") || l.contains("RPATH"))
                .any(|l| l.contains(&*lib.to_string_lossy()));
            println!("rpath to libtorch  {}", if rpath_ok { "yes" } else { "NO" });
            if !rpath_ok {
                problems.push(format!(
                    "{} has no rpath to {}; fix: `cargo clean && cargo build` (the crates' \
                     build scripts add it)",
                    lmzh.display(),
                    lib.display()
                ));
            }
            if lib.join("libtorch_cuda.so").exists() {
                let needed = dynamic
                    .lines()
                    .any(|l| l.contains("NEEDED") && l.contains("libtorch_cuda.so"));
                println!(
                    "links torch_cuda   {}",
                    if needed {
                        "yes"
                    } else {
                        "NO (dropped by --as-needed)"
                    }
                );
                if !needed {
                    problems.push(
                        "libtorch_cuda.so is not a NEEDED library of lmzh, so CUDA reads \
                         unavailable; fix: `cargo clean && cargo build` (build scripts link it \
                         with --no-as-needed)"
                            .to_string(),
                    );
                }
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }

    // 4. run it as a user would: from another folder, no library path
    let output = Command::new(&lmzh)
        .arg("doctor")
        .current_dir("/")
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBTORCH")
        .output()
        .with_context(|| format!("running {}", lmzh.display()))?;
    let report = String::from_utf8_lossy(&output.stdout);
    print!("{report}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() && !report.contains("PROBLEM:") {
        problems.push(format!(
            "{} doctor failed to start ({}); fix: run `cargo xtask setup`, then `cargo clean && cargo build`",
            lmzh.display(),
            output.status
        ));
    }
    problems.extend(
        report
            .lines()
            .filter_map(|l| l.strip_prefix("PROBLEM: "))
            .map(String::from),
    );
    if let Some(gpus) = nvidia_smi_gpus() {
        println!("nvidia-smi         {gpus} GPU(s)");
        if gpus > 0 && report.contains("CUDA               not available") {
            problems.push(
                "nvidia-smi sees a GPU but libtorch reports CUDA unavailable; fix: check that \
                 libtorch has lib/libtorch_cuda.so and rebuild with `cargo clean && cargo build`"
                    .to_string(),
            );
        }
    }

    if problems.is_empty() {
        println!("doctor: all good");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("doctor: {p}");
        }
        bail!("{} problem(s) found", problems.len())
    }
}

fn env_libtorch() -> Option<PathBuf> {
    std::env::var_os("LIBTORCH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `name = "=X.Y.Z"` (or `name = { version = "=X.Y.Z", ... }`) in a manifest.
fn pinned(manifest: &str, name: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let rest = line
            .trim()
            .strip_prefix(name)?
            .trim_start()
            .strip_prefix('=')?;
        let start = rest.find("\"=")? + 2;
        let len = rest[start..].find('"')?;
        Some(rest[start..start + len].to_string())
    })
}

fn dynamic_section(binary: &Path) -> Result<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .context("running readelf (install binutils)")?;
    if !out.status.success() {
        bail!(
            "readelf -d {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GPUs `nvidia-smi -L` lists, or None when it is absent or fails.
fn nvidia_smi_gpus() -> Option<usize> {
    let out = Command::new("nvidia-smi").arg("-L").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("GPU "))
            .count()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pins_in_both_forms() {
        let m = "tch = \"=0.24.0\"\ntorch-sys = { version = \"=0.24.0\", features = [] }\ntchx = \"1\"\n";
        assert_eq!(pinned(m, "tch").as_deref(), Some("0.24.0"));
        assert_eq!(pinned(m, "torch-sys").as_deref(), Some("0.24.0"));
        assert_eq!(pinned("tch = \"0.24\"", "tch"), None);
    }
}
