//! The `sampler` binary: sample images from a trained model (see
//! [`sampler::cli`]; `lmzh sample` takes the same flags).

use std::process::ExitCode;

use clap::Parser;

/// Sample images from a diffusion model with DDPM, DDIM, DPM-Solver++,
/// Euler, Euler ancestral or Heun.
#[derive(Debug, Parser)]
#[command(name = "sampler", version)]
struct Cli {
    #[command(flatten)]
    args: sampler::cli::Args,
    /// More log output on stderr: -v info, -vv debug (default: warnings
    /// only; RUST_LOG, when set, overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

fn run(args: &sampler::cli::Args) -> anyhow::Result<()> {
    let summary = sampler::cli::run(args)?;
    println!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    tensor::runtime::tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
