//! `lmzh`: the umbrella command line of LMZH Step-by-Step Diffusion.
//!
//! Each subcommand reuses the argument structs of the crate that does the
//! work, so `lmzh <cmd>` and that crate's own binary accept the same flags.

mod doctor;

use clap::{Parser, Subcommand};

/// LMZH Step-by-Step Diffusion: train denoising diffusion models on your own
/// images, then sample, edit, inpaint and denoise with them.
#[derive(Debug, Parser)]
#[command(name = "lmzh", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report the libtorch this binary runs on: path, version, threads, CUDA.
    Doctor(doctor::Args),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(args) => doctor::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
