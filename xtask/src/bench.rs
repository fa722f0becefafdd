//! `cargo xtask bench [data]`: the benchmarks, in release mode.
//!
//! - `data`: loader throughput (decode + augment + batch) on the bundled IDX
//!   digits and on a folder of 32x32 PNGs, then the loader against the
//!   default training preset's consumption, in one run.

use std::process::Command;

use anyhow::{bail, Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let which = args.first().map(String::as_str).unwrap_or("data");
    let benches: &[(&str, &str)] = match which {
        "data" => &[("data-pipeline", "loader"), ("trainer", "data_vs_train")],
        other => bail!("unknown benchmark {other:?}; available: data"),
    };
    for (package, bench) in benches {
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
