//! `cargo xtask bench [data]`: the benchmarks, in release mode.
//!
//! - `data`: loader throughput (decode + augment + batch) on the bundled IDX
//!   digits and on a folder of 32x32 PNGs.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("data");
    let (package, bench) = match which {
        "data" => ("data-pipeline", "loader"),
        other => bail!("unknown benchmark {other:?}; available: data"),
    };
    let status = Command::new(env!("CARGO"))
        .current_dir(crate::workspace_root())
        .args(["bench", "--package", package, "--bench", bench])
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("benchmark {which} failed ({status})");
    }
    Ok(())
}
