//! `lmzh denoise`: denoising a real noisy image; flags and run in
//! [`sampler::cli::denoise`].

use std::process::ExitCode;

pub use sampler::cli::denoise::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::denoise::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
