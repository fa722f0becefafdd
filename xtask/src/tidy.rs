//! `tidy`: repository rules that rustc and clippy do not check.
//!
//! - every crate's root file (`lib.rs`, else `main.rs`) starts with `//!` docs;
//! - every crate opts into the workspace lints;
//! - no tracked file is larger than 5 MB (fixtures and assets stay small).

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

const MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

pub fn run() -> Result<()> {
    let root = crate::workspace_root();
    let mut problems = Vec::new();
    let mut crates: Vec<_> = fs::read_dir(root.join("crates"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    crates.push(root.join("xtask"));
    crates.sort();
    for dir in &crates {
        check_crate(dir, &mut problems)?;
    }
    if let Ok(out) = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-z"])
        .output()
    {
        for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let rel = String::from_utf8_lossy(name);
            if let Ok(meta) = fs::metadata(root.join(&*rel)) {
                if meta.len() > MAX_FILE_BYTES {
                    problems.push(format!("{rel}: {} bytes, over the 5 MB limit", meta.len()));
                }
            }
        }
    }
    if problems.is_empty() {
        println!("tidy: {} crates ok", crates.len());
        return Ok(());
    }
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    bail!("{} tidy problem(s)", problems.len())
}

fn check_crate(dir: &Path, problems: &mut Vec<String>) -> Result<()> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let root_file = ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    match root_file {
        None => problems.push(format!("{name}: no src/lib.rs or src/main.rs")),
        Some(path) => {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            if !text.trim_start().starts_with("//!") {
                problems.push(format!(
                    "{}: must start with `//!` crate docs",
                    path.display()
                ));
            }
        }
    }
    let manifest = fs::read_to_string(dir.join("Cargo.toml"))?;
    if !manifest.contains("[lints]") || !manifest.contains("workspace = true") {
        problems.push(format!("{name}/Cargo.toml: add `[lints] workspace = true`"));
    }
    Ok(())
}
