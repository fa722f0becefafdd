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
}

fn run(args: &sampler::cli::Args) -> anyhow::Result<()> {
    let summary = sampler::cli::run(args)?;
    println!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    tensor::runtime::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli.args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
