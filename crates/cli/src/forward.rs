//! `lmzh forward`: the forward process as a strip of images; flags and run in
//! [`sampler::cli::forward`].

use std::process::ExitCode;

pub use sampler::cli::forward::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::forward::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
