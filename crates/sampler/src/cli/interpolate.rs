//! `lmzh interpolate`: walk between two images through the model's noise
//! (DDIM inversion, slerp, DDIM decoding; see [`crate::inversion`]).
//!
//! ```text
//! lmzh interpolate --model DIR --a a.png --b b.png [--frames 8] [--steps 50]
//!                  [--label 3] [--out interpolation.png]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use tch::Tensor;

use super::model::{progress_bar, write_rows, ClassArgs, LoadedModel, ModelArgs};
use crate::inversion::{interpolate, inversion_ddim, InterpolateOptions};
use crate::{Error, Result};

/// Flags of `lmzh interpolate`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Example:\n  \
    lmzh interpolate --model assets/models/digits --a one.png --b seven.png --frames 8 --out strip.png\n\n\
    The strip shows a, the frames from a's inversion (t = 0) to b's (t = 1), then b.")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// The first image.
    #[arg(long, value_name = "FILE")]
    pub a: PathBuf,

    /// The second image.
    #[arg(long, value_name = "FILE")]
    pub b: PathBuf,

    /// Frames from a to b, both ends included (at least 2).
    #[arg(long, default_value_t = 8)]
    pub frames: usize,

    /// DDIM steps of the inversion and of the decoding.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// Fixed-point corrections per inversion step (each one model
    /// evaluation; 0 is plain DDIM inversion).
    #[arg(long, default_value_t = 1)]
    pub refine: usize,

    /// One class label (number or class name) for the inversion and every
    /// frame [default: the unconditional label].
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,

    /// Classifier-free guidance scale (needs --label).
    #[arg(long, default_value_t = 1.0)]
    pub guidance_scale: f64,

    /// The strip: a, the frames, b.
    #[arg(long, value_name = "FILE.png", default_value = "interpolation.png")]
    pub out: PathBuf,
}

/// What `lmzh interpolate` did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub frames: usize,
    pub model_evaluations: usize,
    pub out: PathBuf,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interpolated {} frames (DDIM inversion + slerp + DDIM, {} model evaluations) in {:.1} s; wrote {}",
            self.frames,
            self.model_evaluations,
            self.seconds,
            self.out.display()
        )
    }
}

/// Interpolates as the flags say and writes the strip.
pub fn run(args: &Args) -> Result<Summary> {
    let start = Instant::now();
    if let Some(text) = args.label.as_deref().filter(|t| t.contains(',')) {
        return Err(Error::Labels(format!(
            "--label {text:?}: expected one label for both images"
        )));
    }
    let loaded = LoadedModel::open(&args.model)?;
    let mut ddim = inversion_ddim(&loaded.scheduler, args.steps)?;
    let pair = loaded.load_images(&[args.a.clone(), args.b.clone()])?;
    let class = ClassArgs {
        labels: args.label.clone(),
        guidance_scale: Some(args.guidance_scale),
    };
    let conditioning = loaded.conditioning_from(&class, 1, "--label")?;
    let total = args.steps * (2 + args.refine);
    let bar = progress_bar(total, "interpolate".into());
    let model = loaded.model();
    let options = InterpolateOptions {
        frames: args.frames,
        refine: args.refine,
    };
    let frames = interpolate(
        model,
        &mut ddim,
        &pair.get(0),
        &pair.get(1),
        &conditioning,
        &options,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    let strip = Tensor::f_cat(&[pair.narrow(0, 0, 1), frames, pair.narrow(0, 1, 1)], 0)?;
    write_rows(&args.out, &[strip])?;
    Ok(Summary {
        frames: args.frames,
        model_evaluations: total,
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
