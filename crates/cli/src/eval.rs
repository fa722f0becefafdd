//! `lmzh eval`: the `eval` crate's flags and run (see [`eval::cli`]).

use std::process::ExitCode;

pub use eval::cli::Args;
use eval::cli::Command;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(Command::TrainFeatures(t)) => {
            // Recorded in the net's metadata, with the program named `lmzh`.
            let rest: Vec<String> = std::env::args().skip(1).collect();
            let command = format!("lmzh {}", rest.join(" "));
            println!("{}", eval::cli::run_train_features(t, command)?);
        }
        None => println!("{}", eval::cli::run_metrics(&args.metrics)?),
    }
    Ok(ExitCode::SUCCESS)
}
