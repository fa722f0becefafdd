//! `cargo xtask ci`: everything CI checks, cheapest first, stopping at the
//! first failure. `.ci/run` runs exactly this.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub fn run() -> Result<()> {
    let started = Instant::now();
    step("setup", || crate::setup::run(false).map(|_| ()))?;
    step("tidy", crate::tidy::run)?;
    step("fmt", || cargo(&["fmt", "--all", "--", "--check"], &[]))?;
    step("clippy", || {
        cargo(
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )
    })?;
    if has_nextest() {
        step("tests (nextest)", || {
            cargo(&["nextest", "run", "--workspace", "--no-fail-fast"], &[])
        })?;
        step("doc tests", || {
            cargo(&["test", "--workspace", "--doc", "--quiet"], &[])
        })?;
    } else {
        step("tests", || {
            cargo(&["test", "--workspace", "--no-fail-fast"], &[])
        })?;
    }
    step("docs", || {
        cargo(
            &["doc", "--workspace", "--no-deps", "--quiet"],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    step("doctor", crate::doctor::run)?;
    println!("ci: all green in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n==> {name}");
    let t = Instant::now();
    f().with_context(|| format!("ci step `{name}` failed"))?;
    println!("==> {name}: ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(crate::workspace_root()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn has_nextest() -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}
