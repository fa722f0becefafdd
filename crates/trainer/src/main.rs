//! The `trainer` binary: `cargo run --release -p trainer` trains the default
//! preset; `--help` lists every flag.

use clap::Parser;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "trainer",
    version,
    about = "Train a diffusion model (LMZH Step-by-Step Diffusion)"
)]
struct Cli {
    #[command(flatten)]
    args: trainer::args::Args,
}

fn main() -> ExitCode {
    tensor::runtime::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let interrupt = trainer::args::interrupt_flag();
    match cli.args.run(interrupt) {
        Ok(Some(summary)) => {
            trainer::args::report(&summary);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
