//! `lmzh train`: the `trainer` binary's command line, as a subcommand.
//! `lmzh train --nproc N` runs this same command as N data-parallel processes
//! (`trainer::launch::launch_local`); each prints its own report.

use std::process::ExitCode;

pub use trainer::args::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let interrupt = trainer::args::interrupt_flag();
    if let Some(summary) = args.run(interrupt)? {
        trainer::args::report(&summary);
    }
    Ok(ExitCode::SUCCESS)
}
