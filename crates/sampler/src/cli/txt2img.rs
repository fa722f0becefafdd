//! `lmzh txt2img` and `sampler txt2img`: pictures from prompts with a
//! Stable-Diffusion-style pipeline folder, step by step (see
//! [`crate::text_to_image`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::{Kind, Tensor};
use tensor::image::{save_grid, save_image, BitDepth};
use tensor::Precision;

use crate::denoiser::Autocast;
use crate::factory::{by_name, default_for_config, SolverOptions};
use crate::noise::TorchRng;
use crate::sample::{sample, StepInfo};
use crate::text_to_image::{Prompts, TextToImage};
use crate::trajectory::Recorder;
use crate::{Error, Result};

/// Flags of `lmzh txt2img` / `sampler txt2img`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example (the tiny test pipeline of this repository):\n  \
    lmzh txt2img --model crates/sampler/tests/fixtures/sd_tiny/pipeline --prompt \"a red circle\" --steps 10 --trajectory steps.png"
)]
pub struct Args {
    /// A diffusers StableDiffusionPipeline folder (model_index.json, unet/,
    /// vae/, text_encoder/, tokenizer/, scheduler/), or a text-conditioned
    /// training run (the same in pixel space, without vae/).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// What to draw; repeat for one image (or --num-images-per-prompt) per
    /// prompt. An empty prompt is the unconditional one.
    #[arg(long, value_name = "TEXT", required = true)]
    pub prompt: Vec<String>,

    /// What to steer away from (guidance above 1 only); shared by every prompt.
    #[arg(long, value_name = "TEXT")]
    pub negative_prompt: Option<String>,

    /// Classifier-free guidance scale (1: none).
    #[arg(long, default_value_t = 7.5)]
    pub guidance_scale: f64,

    /// diffusers' guidance_rescale (0 to 1; 0.7 is the paper's value for
    /// zero-terminal-SNR models).
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,

    /// Inference steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// The solver [default: the pipeline's scheduler: PNDMScheduler -> pndm,
    /// DDIMScheduler -> ddim, ...]; any of `lmzh sample --sampler`.
    #[arg(long)]
    pub sampler: Option<String>,

    /// Image height in pixels [default: the U-Net's sample_size x the VAE factor].
    #[arg(long)]
    pub height: Option<i64>,

    /// Image width in pixels [default: as --height].
    #[arg(long)]
    pub width: Option<i64>,

    #[arg(long, default_value_t = 1)]
    pub num_images_per_prompt: usize,

    /// Seed of the initial latents.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Use the text encoder's layer this many before the last.
    #[arg(long)]
    pub clip_skip: Option<usize>,

    /// fp32, bf16 or fp16 (autocast for the U-Net).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,

    /// auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Output folder: image-NNN.png per image and grid.png.
    #[arg(long, value_name = "DIR", default_value = "samples/txt2img")]
    pub out: PathBuf,

    /// Also write the process step by step: at up to 10 steps, x_t and the
    /// predicted clean image of the first 4 images, decoded through the VAE,
    /// as one PNG grid (two rows per image) or an animated .gif.
    #[arg(long, value_name = "FILE.png|.gif")]
    pub trajectory: Option<PathBuf>,

    /// Start from these latents (a safetensors file with one [N, 4, h, w]
    /// tensor) instead of seeded noise, as diffusers' `latents=`.
    #[arg(long, value_name = "FILE")]
    pub init_noise: Option<PathBuf>,

    /// Also write the final `latents` and decoded `samples` (in [-1, 1]) to
    /// this safetensors file.
    #[arg(long, value_name = "FILE")]
    pub save_tensors: Option<PathBuf>,
}

/// Generates the images as the flags say and writes them; returns the
/// line that reports what was done.
pub fn run(args: &Args) -> Result<String> {
    let started = Instant::now();
    let device = args.device.parse::<tensor::DeviceSpec>()?.resolve()?;
    tensor::amp::check(args.precision, device)?;
    if args.steps == 0 {
        return Err(Error::ZeroSteps);
    }
    if !(0.0..=1.0).contains(&args.guidance_rescale) {
        return Err(Error::Unsupported(format!(
            "--guidance-rescale {}: expected 0 to 1",
            args.guidance_rescale
        )));
    }
    let pipe = TextToImage::load(&args.model, device)?;
    let (default_h, default_w) = pipe.default_size();
    let height = args.height.unwrap_or(default_h);
    let width = args.width.or(args.height).unwrap_or(default_w);
    let prompts = Prompts {
        prompts: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        guidance_scale: args.guidance_scale,
        guidance_rescale: args.guidance_rescale,
        images_per_prompt: args.num_images_per_prompt,
        clip_skip: args.clip_skip,
    };
    let encoded = pipe.encode(&prompts)?;
    for w in &encoded.warnings {
        tracing::warn!("{w}");
    }
    let shape = pipe
        .latent_shape(encoded.batch, height, width)
        .map_err(|e| Error::Unsupported(format!("--height/--width: {e}")))?;
    let latents = match &args.init_noise {
        Some(path) => init_noise(path, shape)?.f_to_device(device)?,
        None => {
            tch::manual_seed(args.seed as i64);
            Tensor::randn(shape, (Kind::Float, tch::Device::Cpu)).to_device(device)
        }
    };
    let solver_name = match &args.sampler {
        Some(name) => name.clone(),
        None => default_for_config(&pipe.scheduler)
            .unwrap_or("ddim")
            .to_string(),
    };
    let mut solver = by_name(
        &solver_name,
        &pipe.scheduler,
        args.steps,
        &SolverOptions::default(),
    )?;
    let model = Autocast::new(&pipe.unet, args.precision);
    let total = solver.timesteps().len();
    let mut recorder = args
        .trajectory
        .as_ref()
        .map(|_| Recorder::new(4, 10.min(total), total));
    let mut decode_error = None;
    let mut on_step = |s: &StepInfo<'_>| {
        tracing::debug!(
            step = s.index + 1,
            total,
            timestep = s.timestep,
            "denoising"
        );
        let Some(rec) = recorder.as_mut() else {
            return;
        };
        if !rec.steps().contains(&s.index) || decode_error.is_some() {
            return;
        }
        // x_t as the model saw it and the predicted clean latents, as pictures.
        let k = s.model_input.size()[0].min(4);
        let pictures = pipe
            .decode(&s.model_input.narrow(0, 0, k))
            .and_then(|x| Ok((x, pipe.decode(&s.pred_original.narrow(0, 0, k))?)));
        match pictures {
            Ok((x, x0)) => {
                let (x, x0) = (&x * 2.0 - 1.0, &x0 * 2.0 - 1.0);
                rec.record(&StepInfo {
                    model_input: &x,
                    pred_original: &x0,
                    sample: &x,
                    ..*s
                });
            }
            Err(e) => decode_error = Some(e),
        }
    };
    let final_latents = tch::no_grad(|| {
        sample(
            &model,
            solver.as_mut(),
            &latents,
            &encoded.conditioning,
            &mut TorchRng,
            &mut on_step,
        )
    })?;
    if let Some(e) = decode_error {
        return Err(e);
    }
    let images = pipe.decode(&final_latents)?;
    let signed = &images * 2.0 - 1.0;

    std::fs::create_dir_all(&args.out).map_err(|error| Error::Io {
        path: args.out.clone(),
        error,
    })?;
    let n = images.size()[0];
    for i in 0..n {
        save_image(
            args.out.join(format!("image-{i:03}.png")),
            &signed.get(i),
            BitDepth::Eight,
        )?;
    }
    let per_row = args.num_images_per_prompt.max(1) as i64;
    save_grid(args.out.join("grid.png"), &signed, per_row)?;
    if let Some(path) = &args.save_tensors {
        let cpu = final_latents.to_device(tch::Device::Cpu);
        tensor::safetensors::save(path, &[("latents", &cpu), ("samples", &signed)], None)?;
    }
    if let (Some(path), Some(rec)) = (&args.trajectory, &recorder) {
        rec.save(path)?;
    }
    Ok(format!(
        "{n} image(s) of {height}x{width} from {} prompt(s) with {solver_name}, {} steps, \
         guidance {} in {:.1} s; wrote {} (image-NNN.png, grid.png){}",
        args.prompt.len(),
        args.steps,
        args.guidance_scale,
        started.elapsed().as_secs_f64(),
        args.out.display(),
        args.trajectory
            .as_ref()
            .map(|p| format!(" and {}", p.display()))
            .unwrap_or_default()
    ))
}

/// `--init-noise`: one tensor of `shape` from a safetensors file.
fn init_noise(path: &Path, shape: [i64; 4]) -> Result<Tensor> {
    let fail = |reason: String| Error::NoiseFile {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = tensor::safetensors::load(path, tch::Device::Cpu)?;
    let mut tensors = tensors.into_values();
    let (Some(t), None) = (tensors.next(), tensors.next()) else {
        return Err(fail("expected exactly one tensor (--init-noise)".into()));
    };
    if t.size() != shape {
        return Err(fail(format!(
            "shape {:?}, expected {shape:?} (--init-noise)",
            t.size()
        )));
    }
    Ok(t.f_to_kind(Kind::Float)?)
}
