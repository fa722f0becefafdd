//! `lmzh inpaint`: inpainting (RePaint); flags and run in
//! [`sampler::cli::inpaint`].

use std::process::ExitCode;

pub use sampler::cli::inpaint::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::inpaint::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
