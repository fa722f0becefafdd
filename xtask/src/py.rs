//! `cargo xtask py SCRIPT [ARGS...]`: run a reference script with the oracle.
//!
//! The fixture scripts in `scripts/` compute reference tensors with PyTorch and
//! diffusers. They run on the torch of `cargo xtask setup` plus the packages of
//! `scripts/requirements-oracle.txt`, installed once per machine into
//! `$LMZH_CACHE_DIR/py-oracle/<hash of that file>` (atomically, like
//! libtorch). The product itself never needs Python.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::flags::{is_help, Flags, Parsed};
use crate::setup;

pub const USAGE: &str = "\
usage: cargo xtask py SCRIPT [ARGS...]

Runs a reference script (scripts/*.py) with the torch of `cargo xtask setup`
and the packages of scripts/requirements-oracle.txt (diffusers), installed
once per machine; ARGS go to the script. Only fixture generation needs it.
";

/// The script and its arguments (which are the script's: `py S --help` is
/// the script's help).
pub fn parse(args: &[String]) -> Result<Parsed<Vec<String>>> {
    let f = Flags::new("py", USAGE, args);
    match args.first() {
        None => Err(f.error("SCRIPT is missing")),
        Some(a) if is_help(a) => Ok(Parsed::Help(USAGE)),
        Some(a) if a.starts_with('-') => Err(f.unknown(a)),
        Some(_) => Ok(Parsed::Run(args.to_vec())),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let Some((script, _)) = args.split_first() else {
        bail!("usage: cargo xtask py SCRIPT.py [ARGS...]");
    };
    let status = command(args)?.status().context("running python")?;
    if !status.success() {
        bail!("{script} failed ({status})");
    }
    Ok(())
}

/// A `python SCRIPT ARGS...` command with torch (from setup) and the oracle
/// packages importable, the oracle installed first if needed.
pub fn command(args: &[String]) -> Result<Command> {
    let Some((script, rest)) = args.split_first() else {
        bail!("usage: cargo xtask py SCRIPT.py [ARGS...]");
    };
    let root = crate::workspace_root();
    let libtorch = setup::run(false)?;
    let requirements = root.join("scripts/requirements-oracle.txt");
    let text = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let oracle = setup::cache_dir()
        .join("py-oracle")
        .join(format!("{:016x}", fnv1a(&text)));
    setup::install_atomically(
        &oracle,
        false,
        "the Python reference oracle (diffusers)",
        |dir| {
            let req = requirements.to_string_lossy();
            setup::pip_install_target(dir, &["--no-deps", "-r", &req])?;
            // diffusers' own dependencies, minus torch (which comes from setup)
            setup::pip_install_target(
                dir,
                &[
                    "huggingface_hub",
                    "filelock",
                    "regex",
                    "requests",
                    "pillow",
                    "importlib_metadata",
                ],
            )
        },
    )?;
    // libtorch root is `<site>/torch`; its parent is the site folder to import from.
    let torch_site = libtorch.parent().context("libtorch root has no parent")?;
    let python_path = std::env::join_paths([oracle.as_path(), torch_site])?;
    let mut cmd = Command::new(setup::python());
    cmd.current_dir(&root)
        .arg(Path::new(script))
        .args(rest)
        .env("PYTHONPATH", python_path)
        .env("HF_HUB_OFFLINE", "1");
    Ok(cmd)
}

/// FNV-1a, 64-bit: names the oracle folder after the requirements it holds.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
