//! `lmzh sample`: the `sampler` binary's flags and run (see
//! [`sampler::cli`]).

use std::process::ExitCode;

pub use sampler::cli::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let summary = sampler::cli::run(args)?;
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
