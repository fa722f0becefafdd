//! `lmzh denoise`: remove Gaussian noise from real images with a trained
//! model (see [`mod@crate::denoise`]).
//!
//! ```text
//! lmzh denoise --model DIR --image noisy.png (--sigma 0.2 | --estimate)
//!              [--steps 50] [--labels 3] [--reference clean.png]
//!              [--out denoised.png] [--compare before-after.png]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use tch::Tensor;

use super::model::{
    mse_pixels, progress_bar, write_images, write_rows, ClassArgs, LoadedModel, ModelArgs,
};
use crate::denoise::{denoise, estimate_noise_sigma};
use crate::{Error, Result};

/// Flags of `lmzh denoise`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("noise").required(true).args(["sigma", "estimate"])))]
#[command(after_help = "Example:\n  \
    lmzh denoise --model assets/models/digits --image noisy.png --sigma 0.2 --out clean.png\n  \
    lmzh denoise --model assets/models/digits --image noisy.png --estimate --reference original.png\n\n\
    The input is taken as x_t of the timestep whose noise level matches sigma, then denoised \
    with deterministic DDIM; the chosen timestep is printed.")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Noisy image(s), repeated or comma-separated.
    #[arg(long, value_name = "FILE", required = true, value_delimiter = ',')]
    pub image: Vec<PathBuf>,

    /// Standard deviation of the noise in [0, 1] pixel units (pixel values
    /// divided by 255 for 8-bit images; 25/255 is about 0.098). The model
    /// works in [-1, 1], where it is 2 * sigma.
    #[arg(long, value_name = "S")]
    pub sigma: Option<f64>,

    /// Estimate sigma from each image (median absolute diagonal Haar
    /// wavelet coefficient / 0.6745) and print it.
    #[arg(long)]
    pub estimate: bool,

    /// DDIM steps over the model's whole schedule; those below the chosen
    /// timestep are run.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    #[command(flatten)]
    pub class: ClassArgs,

    /// Clean image(s), one per input, to print the mean squared error (in
    /// [0, 1] pixel units) before and after.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    pub reference: Vec<PathBuf>,

    /// The denoised image (one input), else one row of results.
    #[arg(long, value_name = "FILE.png", default_value = "denoised.png")]
    pub out: PathBuf,

    /// Also write the noisy inputs above the results (and the references
    /// below, when given), as one grid.
    #[arg(long, value_name = "FILE.png")]
    pub compare: Option<PathBuf>,
}

/// One denoised image.
#[derive(Debug, Clone)]
pub struct Report {
    pub image: PathBuf,
    /// The noise sigma used, in [0, 1] pixel units.
    pub sigma: f64,
    pub estimated: bool,
    pub timestep: usize,
    pub steps: usize,
    /// MSE to the reference before and after, in [0, 1] pixel units.
    pub mse: Option<(f64, f64)>,
}

/// What `lmzh denoise` did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub reports: Vec<Report>,
    pub out: PathBuf,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.reports {
            write!(
                f,
                "{}: sigma {:.4} ({}) -> timestep {}, {} DDIM steps",
                r.image.display(),
                r.sigma,
                if r.estimated { "estimated" } else { "given" },
                r.timestep,
                r.steps
            )?;
            if let Some((before, after)) = r.mse {
                write!(f, "; MSE to the reference {before:.5} -> {after:.5}")?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "denoised {} image(s) in {:.1} s; wrote {}",
            self.reports.len(),
            self.seconds,
            self.out.display()
        )
    }
}

/// Denoises the images as the flags say and writes the results.
pub fn run(args: &Args) -> Result<Summary> {
    let start = Instant::now();
    if !args.reference.is_empty() && args.reference.len() != args.image.len() {
        return Err(Error::Unsupported(format!(
            "{} --reference file(s) for {} --image file(s): expected one per image",
            args.reference.len(),
            args.image.len()
        )));
    }
    if let Some(s) = args.sigma {
        if !(s.is_finite() && s >= 0.0) {
            return Err(Error::Unsupported(format!(
                "--sigma {s}: expected a number >= 0 in [0, 1] pixel units"
            )));
        }
    }
    let loaded = LoadedModel::open(&args.model)?;
    let images = loaded.load_images(&args.image)?;
    let references = if args.reference.is_empty() {
        None
    } else {
        Some(loaded.load_images(&args.reference)?)
    };
    let n = images.size()[0];
    let conditioning = loaded.conditioning(&args.class, n as usize)?;
    tensor::seed::seed_everything(args.model.seed);
    let model = loaded.model();
    let mut outputs = Vec::with_capacity(n as usize);
    let mut reports = Vec::with_capacity(n as usize);
    for (i, path) in args.image.iter().enumerate() {
        let noisy = images.narrow(0, i as i64, 1);
        let (sigma, estimated) = match args.sigma {
            Some(s) if !args.estimate => (s, false),
            _ => (estimate_noise_sigma(&noisy)?, true),
        };
        let conditioning = conditioning.narrow(i as i64, 1)?;
        let bar = progress_bar(args.steps, format!("denoise {}", path.display()));
        let done = denoise(
            model,
            &loaded.scheduler,
            &noisy,
            sigma,
            args.steps,
            &conditioning,
            &mut |_| bar.inc(1),
        )?;
        bar.finish_and_clear();
        let mse = references.as_ref().map(|r| {
            let clean = r.narrow(0, i as i64, 1);
            (mse_pixels(&noisy, &clean), mse_pixels(&done.images, &clean))
        });
        reports.push(Report {
            image: path.clone(),
            sigma,
            estimated,
            timestep: done.timestep,
            steps: done.steps,
            mse,
        });
        outputs.push(done.images);
    }
    let results = Tensor::f_cat(&outputs, 0)?;
    write_images(&args.out, &results, n)?;
    if let Some(path) = &args.compare {
        let mut rows = vec![images.shallow_clone(), results];
        rows.extend(references);
        write_rows(path, &rows)?;
    }
    Ok(Summary {
        reports,
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}
