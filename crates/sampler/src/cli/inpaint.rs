//! `lmzh inpaint`: fill the white region of a mask with RePaint (see
//! [`crate::repaint`]), or with `--prompt` in the latent space of a
//! Stable-Diffusion-style pipeline (see [`crate::text_editing`]).
//!
//! ```text
//! lmzh inpaint --model DIR --image in.png --mask mask.png [--steps 100]
//!              [--jump-length 10] [--jump-n-sample 10] [--eta 1]
//!              [--labels 3] [--out inpainted.png] [--compare before-after.png]
//! lmzh inpaint --model SD_PIPELINE --prompt "a red door" --image in.png --mask mask.png
//!              [--strength 1] [--sampler pndm] [--steps 50] [--guidance-scale 7.5]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use tch::Tensor;

use super::model::{progress_bar, write_images, write_rows, ClassArgs, LoadedModel, ModelArgs};
use super::text::{write_outputs, Outputs, TextArgs, TextEdit};
use crate::denoiser::Autocast;
use crate::edit::start_position;
use crate::noise::TorchRng;
use crate::repaint::{inpaint, RePaint};
use crate::text_editing::{inpaint_by_channels, load_mask, tile_batch, EditNoise};
use crate::{Error, Result};

/// Flags of `lmzh inpaint`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example (redraw the right half of a digit):\n  \
    lmzh inpaint --model assets/models/digits --image digit.png --mask right-half.png --out filled.png\n\n\
    The mask is a grey or colour image of the input's size: white (> 50% grey) is filled, \
    black is kept exactly.\n\n\
    With a Stable Diffusion pipeline folder, --prompt redraws the white region as diffusers' \
    StableDiffusionInpaintPipeline (mask blending for a plain U-Net, the extra inputs of a \
    9-channel inpainting U-Net):\n  \
    lmzh inpaint --model sd-pipeline --image room.png --mask window.png --prompt \"a window at night\"")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Input image(s), repeated or comma-separated, all of the mask's size.
    #[arg(long, value_name = "FILE", required = true, value_delimiter = ',')]
    pub image: Vec<PathBuf>,

    /// The mask: white = fill, black = keep; the size of every input image.
    #[arg(long, value_name = "FILE")]
    pub mask: PathBuf,

    /// Inference steps of the reverse process (each may be revisited by the
    /// jumps; the paper uses 250) [default: 100; 50 with --prompt].
    #[arg(long)]
    pub steps: Option<usize>,

    /// With --prompt: how far the image is noised before the fill, in
    /// [0, 1]; 1 starts from pure noise (diffusers' default).
    #[arg(long)]
    pub strength: Option<f64>,

    /// With --prompt: the solver [default: the pipeline's scheduler].
    #[arg(long = "sampler", value_name = "NAME")]
    pub sampler: Option<String>,

    /// Steps to go back up at each jump (RePaint's j; 1 disables the
    /// back-and-forth together with --jump-n-sample 1).
    #[arg(long, default_value_t = 10)]
    pub jump_length: usize,

    /// How many times each stretch of --jump-length steps is run (RePaint's
    /// r; 1 = no resampling).
    #[arg(long, default_value_t = 10)]
    pub jump_n_sample: usize,

    /// Noise of each step: 1 is the DDPM posterior (the paper), 0
    /// deterministic DDIM steps [default: 1; 0 with --prompt (DDIM's eta)].
    #[arg(long)]
    pub eta: Option<f64>,

    #[command(flatten)]
    pub class: ClassArgs,

    #[command(flatten)]
    pub text: TextArgs,

    /// The inpainted image (one input), else one row of results.
    #[arg(long, value_name = "FILE.png", default_value = "inpainted.png")]
    pub out: PathBuf,

    /// Also write the inputs, the inputs with the fill region grey, and the
    /// results, as one grid of three rows.
    #[arg(long, value_name = "FILE.png")]
    pub compare: Option<PathBuf>,
}

/// What `lmzh inpaint` did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub images: usize,
    /// How: RePaint, or the solver and the kind of U-Net.
    pub method: String,
    pub model_evaluations: usize,
    /// Fraction of pixels filled.
    pub filled: f64,
    pub out: PathBuf,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "inpainted {:.0}% of {} image(s) with {} ({} model evaluations) in {:.1} s; wrote {}",
            self.filled * 100.0,
            self.images,
            self.method,
            self.model_evaluations,
            self.seconds,
            self.out.display()
        )
    }
}

/// Inpaints the images as the flags say and writes the results.
pub fn run(args: &Args) -> Result<Summary> {
    if args.text.active() {
        return run_text(args);
    }
    args.text.check_unused()?;
    for (flag, given) in [
        ("--strength", args.strength.is_some()),
        ("--sampler", args.sampler.is_some()),
    ] {
        if given {
            return Err(Error::Unsupported(format!(
                "{flag} applies to --prompt inpainting; RePaint runs its own schedule"
            )));
        }
    }
    let start = Instant::now();
    let loaded = LoadedModel::open(&args.model)?;
    let repaint = RePaint::new(
        &loaded.scheduler,
        args.steps.unwrap_or(100),
        args.jump_length,
        args.jump_n_sample,
        args.eta.unwrap_or(1.0),
    )?;
    let images = loaded.load_images(&args.image)?;
    // The mask must have the size of every image (checked before resizing).
    let masks: Vec<Tensor> = args
        .image
        .iter()
        .map(|p| loaded.input.load_mask(&args.mask, p))
        .collect::<Result<_>>()?;
    let fill = masks[0].unsqueeze(0).to_device(loaded.device);
    let n = images.size()[0];
    let conditioning = loaded.conditioning(&args.class, n as usize)?;
    tensor::seed::seed_everything(args.model.seed);
    let bar = progress_bar(repaint.model_evaluations(), "inpaint, RePaint".into());
    let model = loaded.model();
    let out = inpaint(
        model,
        &repaint,
        &images,
        &fill,
        &conditioning,
        &mut TorchRng,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    write_images(&args.out, &out, n)?;
    if let Some(path) = &args.compare {
        let keep = fill.ones_like() - &fill;
        let masked = &images * &keep;
        write_rows(path, &[images.shallow_clone(), masked, out])?;
    }
    Ok(Summary {
        images: n as usize,
        method: "RePaint".into(),
        model_evaluations: repaint.model_evaluations(),
        filled: fill.mean(tch::Kind::Double).double_value(&[]),
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `lmzh inpaint --prompt`: the mask's white region redrawn by the prompt in
/// the latent space of a Stable Diffusion pipeline, as diffusers'
/// `StableDiffusionInpaintPipeline`.
fn run_text(args: &Args) -> Result<Summary> {
    let started = Instant::now();
    let strength = args.strength.unwrap_or(1.0);
    let edit = TextEdit::open(&args.model, &args.class, &args.text)?;
    let mut solver = edit.solver(
        args.sampler.as_deref(),
        args.steps.unwrap_or(50),
        args.eta.unwrap_or(0.0),
    )?;
    let at = start_position(solver.as_ref(), strength)?;
    let by_channels = inpaint_by_channels(
        edit.pipe.unet.config().in_channels,
        edit.pipe.latent_channels(),
    )?;
    let images = edit.load_images(&args.image, &args.text)?;
    let size = images.size();
    let masks = load_mask(&args.mask, size[2], size[3], edit.pipe.vae_scale_factor())?;
    let batch = edit.encoded.batch;
    // One image for every prompt, or one per prompt (checked before any work).
    tile_batch(&images, batch, "input images").map(drop)?;
    tensor::seed::seed_everything(args.model.seed);
    let draws = EditNoise::inpaint(
        size[0],
        batch,
        edit.latent_chw(&images),
        !by_channels || strength < 1.0,
    );
    let inputs = edit.pipe.inpaint_latents(&images, &masks, batch, &draws)?;
    let unet = Autocast::new(&edit.pipe.unet, edit.precision);
    let len = solver.timesteps().len();
    let bar = progress_bar(len - at, format!("inpaint, {}", solver.name()));
    let out = edit.pipe.inpaint(
        &unet,
        solver.as_mut(),
        &edit.encoded.conditioning,
        &inputs,
        strength,
        &draws.noise,
        &mut TorchRng,
        &mut |_| bar.inc(1),
    )?;
    bar.finish_and_clear();
    // The compare grid's middle row: the inputs with the region to fill black.
    let keep = masks.lt(0.5).to_kind(tch::Kind::Float);
    let masked = tile_batch(&(&images * &keep), batch, "input images")?;
    let outputs = Outputs {
        out: &args.out,
        compare: args.compare.as_deref(),
        save_tensors: args.text.save_tensors.as_deref(),
    };
    write_outputs(&edit, &images, Some(masked), &[out], &outputs)?;
    Ok(Summary {
        images: batch as usize,
        method: format!(
            "{}, {}",
            solver.name(),
            if by_channels {
                "an inpainting U-Net"
            } else {
                "mask blending in latent space"
            }
        ),
        model_evaluations: len - at,
        filled: masks.mean(tch::Kind::Double).double_value(&[]),
        out: args.out.clone(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
