//! `lmzh edit`: image-to-image (SDEdit); flags and run in
//! [`sampler::cli::edit`].

use std::process::ExitCode;

pub use sampler::cli::edit::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::edit::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
