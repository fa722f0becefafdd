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
    /// More log output on stderr: -v info, -vv debug (default: warnings
    /// only; RUST_LOG, when set, overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

fn main() -> ExitCode {
    tensor::runtime::tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.verbose);
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
