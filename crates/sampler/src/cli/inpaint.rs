//! `lmzh inpaint`: fill the white region of a mask with RePaint (see
//! [`crate::repaint`]).
//!
//! ```text
//! lmzh inpaint --model DIR --image in.png --mask mask.png [--steps 100]
//!              [--jump-length 10] [--jump-n-sample 10] [--eta 1]
//!              [--labels 3] [--out inpainted.png] [--compare before-after.png]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use tch::Tensor;

use super::model::{progress_bar, write_images, write_rows, ClassArgs, LoadedModel, ModelArgs};
use crate::noise::TorchRng;
use crate::repaint::{inpaint, RePaint};
use crate::Result;

/// Flags of `lmzh inpaint`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example (redraw the right half of a digit):\n  \
    lmzh inpaint --model assets/models/digits --image digit.png --mask right-half.png --out filled.png\n\n\
    The mask is a grey or colour image of the input's size: white (> 50% grey) is filled, \
    black is kept exactly.")]
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
    /// jumps; the paper uses 250).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Steps to go back up at each jump (RePaint's j; 1 disables the
    /// back-and-forth together with --jump-n-sample 1).
    #[arg(long, default_value_t = 10)]
    pub jump_length: usize,

    /// How many times each stretch of --jump-length steps is run (RePaint's
    /// r; 1 = no resampling).
    #[arg(long, default_value_t = 10)]
    pub jump_n_sample: usize,

    /// Noise of each step: 1 is the DDPM posterior (the paper), 0
    /// deterministic DDIM steps.
    #[arg(long, default_value_t = 1.0)]
    pub eta: f64,

    #[command(flatten)]
    pub class: ClassArgs,

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
            "inpainted {:.0}% of {} image(s) with RePaint ({} model evaluations) in {:.1} s; wrote {}",
            self.filled * 100.0,
            self.images,
            self.model_evaluations,
            self.seconds,
            self.out.display()
        )
    }
}

/// Inpaints the images as the flags say and writes the results.
pub fn run(args: &Args) -> Result<Summary> {
    let start = Instant::now();
    let loaded = LoadedModel::open(&args.model)?;
    let repaint = RePaint::new(
        &loaded.scheduler,
        args.steps,
        args.jump_length,
        args.jump_n_sample,
        args.eta,
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
        model_evaluations: repaint.model_evaluations(),
        filled: fill.mean(tch::Kind::Double).double_value(&[]),
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
