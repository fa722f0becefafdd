//! `lmzh edit`: image-to-image with a trained model (SDEdit, see
//! [`mod@crate::edit`]), or with `--prompt` through a Stable-Diffusion-style
//! pipeline's VAE (see [`crate::text_editing`]).
//!
//! ```text
//! lmzh edit --model DIR --image in.png [--image more.png] [--strength 0.6[,0.8]]
//!           [--sampler ddim] [--steps 50] [--labels 8] [--guidance-scale 1]
//!           [--out edited.png] [--compare before-after.png]
//! lmzh edit --model SD_PIPELINE --prompt "a watercolour" --image in.png [--strength 0.8]
//!           [--negative-prompt N] [--guidance-scale 7.5] [--sampler pndm] [--steps 50]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use super::model::{
    cpu_noise, progress_bar, write_images, write_rows, ClassArgs, LoadedModel, ModelArgs,
};
use super::text::{write_outputs, Outputs, TextArgs, TextEdit};
use crate::denoiser::Autocast;
use crate::edit::{edit, start_position};
use crate::factory::{by_name, SolverOptions};
use crate::noise::TorchRng;
use crate::text_editing::{tile_batch, EditNoise};
use crate::{Error, Result};

/// Flags of `lmzh edit`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example (turn a bundled digit into an 8):\n  \
    lmzh edit --model assets/models/digits --image three.png --strength 0.6 --labels 8 --out eight.png\n\n\
    Strength 0 returns the image unchanged; strength 1 ignores it and samples anew from the same noise.\n\n\
    With a Stable Diffusion pipeline folder, --prompt edits in its latent space as diffusers' \
    StableDiffusionImg2ImgPipeline (same seed, same images):\n  \
    lmzh edit --model sd-pipeline --image photo.png --prompt \"a watercolour painting\" --strength 0.8 --out painted.png")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Input image(s), repeated or comma-separated; preprocessed as the
    /// model's training data (size, channels).
    #[arg(long, value_name = "FILE", required = true, value_delimiter = ',')]
    pub image: Vec<PathBuf>,

    /// How far to noise the image before denoising it, in [0, 1]: the
    /// fraction of the solver's steps that are run. Several values
    /// (comma-separated) give one row of results each.
    /// [default: 0.6; 0.8 with --prompt, as diffusers]
    #[arg(long, value_name = "S[,S...]", value_delimiter = ',')]
    pub strength: Vec<f64>,

    /// The solver: ddpm, ddim, dpm++2m, euler, euler-a, heun or pndm (plms:
    /// pndm with skip_prk_steps, as Stable Diffusion runs it) [default: ddim;
    /// with --prompt the pipeline's scheduler].
    #[arg(long = "sampler", value_name = "NAME")]
    pub sampler: Option<String>,

    /// Inference steps for strength 1 (a strength s runs floor(s * steps)).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// DDIM's eta (ddim only).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,

    /// Karras noise levels (dpm++2m, euler, heun).
    #[arg(long)]
    pub karras: bool,

    #[command(flatten)]
    pub class: ClassArgs,

    #[command(flatten)]
    pub text: TextArgs,

    /// The edited image (one input and one strength), else a grid with one
    /// row per strength and one column per image (per prompt with --prompt).
    #[arg(long, value_name = "FILE.png", default_value = "edited.png")]
    pub out: PathBuf,

    /// Also write the inputs above the results, as one before/after grid.
    #[arg(long, value_name = "FILE.png")]
    pub compare: Option<PathBuf>,
}

/// What `lmzh edit` did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub images: usize,
    /// (strength, first timestep run or None for no step, model evaluations).
    pub runs: Vec<(f64, Option<f64>, usize)>,
    pub solver: String,
    pub out: PathBuf,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (s, t, evals) in &self.runs {
            match t {
                Some(t) => writeln!(
                    f,
                    "strength {s}: noised to timestep {t}, then {evals} {} model evaluations",
                    self.solver
                )?,
                None => writeln!(f, "strength {s}: no step, the input unchanged")?,
            }
        }
        write!(
            f,
            "edited {} image(s) in {:.1} s; wrote {}",
            self.images,
            self.seconds,
            self.out.display()
        )
    }
}

/// Edits the images as the flags say and writes the results.
pub fn run(args: &Args) -> Result<Summary> {
    if args.text.active() {
        return run_text(args);
    }
    args.text.check_unused()?;
    let start = Instant::now();
    let strengths = strengths(args, 0.6);
    let loaded = LoadedModel::open(&args.model)?;
    let options = SolverOptions {
        eta: args.eta,
        use_karras_sigmas: args.karras.then_some(true),
    };
    let name = args.sampler.as_deref().unwrap_or("ddim");
    let mut solver = by_name(name, &loaded.scheduler, args.steps, &options)?;
    let starts: Vec<usize> = strengths
        .iter()
        .map(|&s| start_position(solver.as_ref(), s))
        .collect::<Result<_>>()?;
    let images = loaded.load_images(&args.image)?;
    let n = images.size()[0];
    let conditioning = loaded.conditioning(&args.class, n as usize)?;
    tensor::seed::seed_everything(args.model.seed);
    let noise = cpu_noise(&images.size(), loaded.device);
    let len = solver.timesteps().len();
    let total: usize = starts.iter().map(|&s| len - s).sum();
    let bar = progress_bar(total, format!("edit, {}", solver.name()));
    let model = loaded.model();
    let mut rows = Vec::with_capacity(starts.len());
    let mut runs = Vec::with_capacity(starts.len());
    for (&strength, &at) in strengths.iter().zip(&starts) {
        let out = edit(
            model,
            solver.as_mut(),
            &images,
            strength,
            &noise,
            &conditioning,
            &mut TorchRng,
            &mut |_| bar.inc(1),
        )?;
        runs.push((strength, solver.timesteps().get(at).copied(), len - at));
        rows.push(out);
    }
    bar.finish_and_clear();
    let results = tch::Tensor::f_cat(&rows, 0)?;
    write_images(&args.out, &results, n)?;
    if let Some(path) = &args.compare {
        let mut all = vec![images.shallow_clone()];
        all.extend(rows);
        write_rows(path, &all)?;
    }
    Ok(Summary {
        images: n as usize,
        runs,
        solver: solver.name().to_string(),
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `--strength`, else `default`.
fn strengths(args: &Args, default: f64) -> Vec<f64> {
    if args.strength.is_empty() {
        vec![default]
    } else {
        args.strength.clone()
    }
}

/// `lmzh edit --prompt`: image to image in the latent space of a Stable
/// Diffusion pipeline, as diffusers' `StableDiffusionImg2ImgPipeline`.
fn run_text(args: &Args) -> Result<Summary> {
    let started = Instant::now();
    let strengths = strengths(args, 0.8);
    if args.karras {
        return Err(Error::Unsupported(
            "--karras: with --prompt the noise levels are the pipeline scheduler's".into(),
        ));
    }
    if args.text.save_tensors.is_some() && strengths.len() != 1 {
        return Err(Error::Unsupported(
            "--save-tensors takes one --strength".into(),
        ));
    }
    let edit = TextEdit::open(&args.model, &args.class, &args.text)?;
    let mut solver = edit.solver(args.sampler.as_deref(), args.steps, args.eta)?;
    let starts: Vec<usize> = strengths
        .iter()
        .map(|&s| start_position(solver.as_ref(), s))
        .collect::<Result<_>>()?;
    let images = edit.load_images(&args.image, &args.text)?;
    let n = images.size()[0];
    let batch = edit.encoded.batch;
    // One image for every prompt, or one per prompt (checked before any work).
    tile_batch(&images, batch, "input images").map(drop)?;
    let unet = Autocast::new(&edit.pipe.unet, edit.precision);
    let len = solver.timesteps().len();
    let bar = progress_bar(
        starts.iter().map(|&s| len - s).sum(),
        format!("edit, {}", solver.name()),
    );
    let mut latents = Vec::with_capacity(starts.len());
    let mut runs = Vec::with_capacity(starts.len());
    for (&strength, &at) in strengths.iter().zip(&starts) {
        // The same draws for every strength, as diffusers with one seed.
        tensor::seed::seed_everything(args.model.seed);
        let draws = EditNoise::img2img(n, batch, edit.latent_chw(&images));
        let out = edit.pipe.img2img(
            &unet,
            solver.as_mut(),
            &edit.encoded.conditioning,
            &images,
            strength,
            &draws,
            &mut TorchRng,
            &mut |_| bar.inc(1),
        )?;
        runs.push((strength, solver.timesteps().get(at).copied(), len - at));
        latents.push(out);
    }
    bar.finish_and_clear();
    let outputs = Outputs {
        out: &args.out,
        compare: args.compare.as_deref(),
        save_tensors: args.text.save_tensors.as_deref(),
    };
    write_outputs(&edit, &images, None, &latents, &outputs)?;
    Ok(Summary {
        images: batch as usize,
        runs,
        solver: format!("{} (latent)", solver.name()),
        out: args.out.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
