//! `lmzh eval`: the `eval` crate's flags and run (see [`eval::cli`]); for
//! `lmzh eval prompts`, the text-to-image sampling it scores.

use std::process::ExitCode;

use anyhow::Context;
use eval::cli::{Command, PromptsArgs};
use sampler::text_to_image::{Prompts, TextToImage};
use tensor::tch::{self, Kind, Tensor};

pub use eval::cli::Args;

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        Some(Command::TrainFeatures(t)) => {
            // Recorded in the net's metadata, with the program named `lmzh`.
            let rest: Vec<String> = std::env::args().skip(1).collect();
            let command = format!("lmzh {}", rest.join(" "));
            println!("{}", eval::cli::run_train_features(t, command)?);
        }
        Some(Command::Prompts(p)) => println!("{}", run_prompts(p)?),
        None => println!("{}", eval::cli::run_metrics(&args.metrics)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the run folder as a text-to-image pipeline (pixel space, or latent
/// with its VAE) and scores what it draws.
pub fn run_prompts(args: &PromptsArgs) -> anyhow::Result<eval::cli::PromptOutcome> {
    let device = args
        .device
        .parse::<tensor::DeviceSpec>()
        .and_then(|d| d.resolve())
        .context("--device")?;
    let pipe = TextToImage::load(&args.model, device)
        .with_context(|| format!("--model {}", args.model.display()))?;
    // Pixel space, or latent mode decoded to pixels by the run's VAE.
    let (height, width) = pipe.default_size();
    let channels = match &pipe.vae {
        Some(vae) => vae.config().out_channels,
        None => pipe.latent_channels(),
    };
    if (height, width, channels) != (32, 32, 1) {
        anyhow::bail!(
            "--model {}: draws {channels}-channel {height}x{width} images; prompt evaluation \
             needs the 1-channel 32x32 canvases of captioned-digits",
            args.model.display()
        );
    }
    let mut draw = |prompts: &[String], k: usize| -> eval::Result<Tensor> {
        sample(&pipe, args, prompts, k).map_err(|e| eval::Error::Sampling(format!("{e:#}")))
    };
    Ok(eval::cli::run_prompts(args, &mut draw)?)
}

/// `[prompts x k, 1, 32, 32]` in [-1, 1]: each prompt's images together,
/// from noise seeded by `--seed`.
fn sample(
    pipe: &TextToImage,
    args: &PromptsArgs,
    prompts: &[String],
    k: usize,
) -> anyhow::Result<Tensor> {
    let encoded = pipe.encode(&Prompts {
        prompts: prompts.to_vec(),
        negative_prompt: None,
        guidance_scale: args.guidance_scale,
        guidance_rescale: 0.0,
        images_per_prompt: k,
        clip_skip: None,
    })?;
    for w in &encoded.warnings {
        tracing::warn!("{w}");
    }
    let (height, width) = pipe.default_size();
    let shape = pipe.latent_shape(encoded.batch, height, width)?;
    tch::manual_seed(args.seed as i64);
    let device = pipe.unet.vs.device();
    let noise = Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)).to_device(device);
    let mut solver = sampler::by_name(
        &args.sampler,
        &pipe.scheduler,
        args.steps,
        &sampler::SolverOptions::default(),
    )
    .context("--sampler")?;
    let out = tch::no_grad(|| {
        sampler::sample(
            &pipe.unet,
            solver.as_mut(),
            &noise,
            &encoded.conditioning,
            &mut sampler::TorchRng,
            &mut |_| {},
        )
    })?;
    Ok(pipe.decode(&out)? * 2.0 - 1.0)
}
