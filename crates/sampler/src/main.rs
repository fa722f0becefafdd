//! The `sampler` binary: sample images from a trained model (see
//! [`sampler::cli`]; `lmzh sample` takes the same flags).

use std::process::ExitCode;

use clap::Parser;

/// Sample images from a diffusion model with DDPM, DDIM, DPM-Solver++,
/// Euler, Euler ancestral or Heun; `sampler txt2img` draws prompts with a
/// Stable Diffusion pipeline folder.
#[derive(Debug, Parser)]
#[command(name = "sampler", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: sampler::cli::Args,
    /// More log output on stderr: -v info, -vv debug (default: warnings
    /// only; RUST_LOG, when set, overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Pictures from prompts with a diffusers StableDiffusionPipeline folder
    /// (the same as `lmzh txt2img`).
    Txt2img(sampler::cli::txt2img::Args),
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::Txt2img(args)) => println!("{}", sampler::cli::txt2img::run(args)?),
        None => println!("{}", sampler::cli::run(&cli.args)?),
    }
    Ok(())
}

fn main() -> ExitCode {
    tensor::runtime::tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.verbose);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
