//! `lmzh txt2img`: pictures from prompts with a Stable-Diffusion-style
//! pipeline folder, step by step; flags and run in [`sampler::cli::txt2img`].

use std::process::ExitCode;

pub use sampler::cli::txt2img::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    println!("{}", sampler::cli::txt2img::run(args)?);
    Ok(ExitCode::SUCCESS)
}
