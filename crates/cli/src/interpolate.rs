//! `lmzh interpolate`: interpolation through DDIM inversion; flags and run in
//! [`sampler::cli::interpolate`].

use std::process::ExitCode;

pub use sampler::cli::interpolate::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::interpolate::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
