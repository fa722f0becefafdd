//! `lmzh`: the umbrella command line of LMZH Step-by-Step Diffusion.
//!
//! Each subcommand reuses the argument structs of the crate that does the
//! work, so `lmzh <cmd>` and that crate's own binary accept the same flags.

mod bench;
mod denoise;
mod doctor;
mod edit;
mod eval;
mod forward;
mod inpaint;
mod interpolate;
mod sample;
mod schedule;
mod tokenize;
mod train;
mod train_vae;
mod txt2img;
mod unet;

use clap::{Parser, Subcommand};

/// Held by the tests that draw from libtorch's global generator and compare
/// what they drew: tests run on parallel threads of one process, and another
/// test's draw in between would change the sequence.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// LMZH Step-by-Step Diffusion: train denoising diffusion models on your own
/// images, then sample, edit, inpaint and denoise with them.
#[derive(Debug, Parser)]
#[command(name = "lmzh", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log output on stderr: -v info, -vv debug (default: warnings
    /// only; RUST_LOG, when set, overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure training and sampling speed on this machine (img/s, GFLOP/s,
    /// peak RSS) with a random-weight model; `cargo xtask bench` compares
    /// with diffusers.
    Bench(bench::Args),
    /// Report the libtorch this binary runs on: path, version, threads, CUDA.
    Doctor(doctor::Args),
    /// Sample-quality metrics (FD, KID, precision/recall, density/coverage)
    /// on features of a classifier trained on the data; `eval
    /// train-features` trains such a classifier.
    Eval(eval::Args),
    /// Sample images from a model folder with a chosen solver (ddpm, ddim,
    /// dpm++2m, euler, euler-a, heun, pndm).
    Sample(sample::Args),
    /// Show a noise schedule: a table of beta, alpha_bar and SNR over t, or
    /// a plot comparing schedules (--plot FILE.png).
    Schedule(schedule::Args),
    /// Show how a model's CLIP tokenizer reads a prompt: the ids the text
    /// encoder gets (padded or cut to 77) and the tokens.
    Tokenize(tokenize::Args),
    /// Pictures from prompts with a Stable-Diffusion-style pipeline folder
    /// (PNGs, a grid, and --trajectory: every step decoded).
    Txt2img(txt2img::Args),
    /// Train a diffusion model (the `trainer` binary); no arguments trains
    /// the default preset on the bundled digits.
    Train(train::Args),
    /// Train a latent-diffusion VAE (AutoencoderKL) and write a diffusers
    /// vae/ folder; no arguments trains on the bundled digits.
    TrainVae(train_vae::Args),
    /// Look at a U-Net: parameters per block and forward FLOPs
    /// (`lmzh unet info DIR` or `--preset NAME`).
    Unet(unet::Args),
    /// Edit an image with a trained model (SDEdit): noise it part of the way
    /// (--strength), then denoise, optionally towards a class label.
    Edit(edit::Args),
    /// Fill the white region of a mask with a trained model (RePaint), the
    /// rest of the image kept exactly.
    Inpaint(inpaint::Args),
    /// Remove Gaussian noise from an image with a trained model (--sigma S
    /// or --estimate).
    Denoise(denoise::Args),
    /// Interpolate between two images through the model's noise (DDIM
    /// inversion, slerp, DDIM); writes a strip.
    Interpolate(interpolate::Args),
    /// Show the forward process: an image noised to several timesteps of a
    /// schedule, side by side.
    Forward(forward::Args),
}

fn main() -> std::process::ExitCode {
    tensor::runtime::tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.verbose);
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Tokenize(args) => tokenize::run(&args),
        Command::Txt2img(args) => txt2img::run(&args),
        Command::Train(args) => train::run(&args),
        Command::TrainVae(args) => train_vae::run(&args),
        Command::Unet(args) => unet::run(&args),
        Command::Edit(args) => edit::run(&args),
        Command::Inpaint(args) => inpaint::run(&args),
        Command::Denoise(args) => denoise::run(&args),
        Command::Interpolate(args) => interpolate::run(&args),
        Command::Forward(args) => forward::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
