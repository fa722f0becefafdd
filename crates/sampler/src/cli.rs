//! The command line of `sampler` and `lmzh sample`: [`Args`] and [`run`].
//!
//! ```text
//! sampler --model DIR [--sampler ddim] [--steps 50] [--num-images 16]
//!         [--batch-size 16] [--seed 0] [--eta 0] [--device auto]
//!         [--out samples] [--init-noise x_T.safetensors]
//!         [--save-tensors samples.safetensors] [--trajectory t.png|t.gif]
//!         [--labels 3,1,4] [--guidance-scale 1]
//! ```
//!
//! `--model` is a diffusers `UNet2DModel` folder (`config.json` +
//! `diffusion_pytorch_model.safetensors`) or a pipeline folder
//! (`model_index.json`, `unet/`, `scheduler/`). The solver takes the keys of
//! the pipeline's `scheduler/scheduler_config.json` as diffusers'
//! `from_config` would; a folder without one is taken to be a DDPM model
//! with diffusers' default training schedule (linear betas 0.0001..0.02
//! over 1000 steps) and every other key at the solver's default.
//!
//! The initial noise x_T is drawn at once for all images from libtorch's
//! CPU generator seeded with `--seed` (what `torch.manual_seed(seed);
//! torch.randn(N, C, H, W)` draws), or read from `--init-noise`; the
//! stochastic solvers then draw their step noise from the same generator.
//!
//! The editing commands live in submodules, each with its `Args` and `run`:
//! [`edit`] (`lmzh edit`), [`inpaint`], [`denoise`] and [`interpolate`];
//! [`model`] holds what they share.

pub mod denoise;
pub mod edit;
pub mod inpaint;
pub mod interpolate;
pub mod model;
pub mod text;
pub mod txt2img;

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};
use tensor::image::{save_grid, save_image, BitDepth};
use tensor::DeviceSpec;
use unet::config::ClassEmbedding;
use unet::UNet;

use crate::denoiser::Autocast;
use crate::factory::{by_name, SolverOptions};
use crate::guidance::Conditioning;
use crate::noise::TorchRng;
use crate::pipeline::Pipeline;
use crate::sample::sample;
use crate::trajectory::{Format, Recorder};
use crate::{Error, Result};

/// Flags of `sampler` and `lmzh sample`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// A diffusers UNet2DModel folder or pipeline folder (model_index.json,
    /// unet/, scheduler/), such as a trainer run folder [default: the newest
    /// run under --runs-dir].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// Where the trainer writes its runs (used when --model is not given).
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,

    /// The solver: ddpm, ddim, dpm++2m, euler, euler-a, heun or pndm (plms:
    /// pndm with skip_prk_steps, as Stable Diffusion runs it).
    #[arg(long = "sampler", value_name = "NAME", default_value = "ddim")]
    pub sampler: String,

    /// Inference steps (at most the model's training timesteps).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// Number of images [default: 16, or the batch of --init-noise].
    #[arg(long, value_name = "N")]
    pub num_images: Option<usize>,

    /// Images per model call.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,

    /// Seed of the initial noise and of stochastic solvers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// DDIM's eta: 0 is deterministic DDIM, 1 adds DDPM-like noise (ddim only).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,

    /// Karras noise levels (dpm++2m, euler, heun), overriding the scheduler config.
    #[arg(long)]
    pub karras: bool,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Compute precision of the U-Net: fp32, or bf16/fp16 autocast (weights
    /// stay f32, the solver computes in f32). Fast on GPUs and on CPUs with
    /// AVX512-BF16/AMX only.
    #[arg(long, value_name = "fp32|bf16|fp16", default_value = "fp32")]
    pub precision: tensor::Precision,

    /// Run the U-Net in channels-last memory format (same numbers; faster
    /// where the convolution kernels prefer it).
    #[arg(long)]
    pub channels_last: bool,

    /// Output folder: one PNG per image and grid.png.
    #[arg(long, value_name = "DIR", default_value = "samples")]
    pub out: PathBuf,

    /// A safetensors file with one float tensor [N, C, H, W]: the standard-normal
    /// x_T, before any solver scaling.
    #[arg(long, value_name = "FILE")]
    pub init_noise: Option<PathBuf>,

    /// Also write the final samples (tensor `samples`, float32 [N, C, H, W],
    /// model space, not clipped) to this safetensors file.
    #[arg(long, value_name = "FILE")]
    pub save_tensors: Option<PathBuf>,

    /// Write x_t and the predicted x_0 at evenly spaced steps for the first
    /// images, as a .png grid or a .gif animation.
    #[arg(long, value_name = "FILE")]
    pub trajectory: Option<PathBuf>,

    /// Images shown in the trajectory.
    #[arg(long, default_value_t = 4)]
    pub trajectory_images: usize,

    /// Steps shown in the trajectory.
    #[arg(long, default_value_t = 10)]
    pub trajectory_frames: usize,

    /// Class labels of a class-conditional model, comma-separated, repeated
    /// over the images: numbers, or class names from the run's run.json
    /// [default: 0, 1, 2, ... cycling over the classes].
    #[arg(long, visible_alias = "class-labels", value_name = "LIST")]
    pub labels: Option<String>,

    /// Classifier-free guidance scale s (uncond + s (cond - uncond)); 1 is no
    /// guidance. The unconditional label is the last row of the class table,
    /// num_class_embeds - 1.
    #[arg(long, default_value_t = 1.0)]
    pub guidance_scale: f64,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    pub images: usize,
    pub solver: String,
    pub model_evaluations: usize,
    pub out: PathBuf,
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sampled {} images with {} ({} model evaluations per batch) in {:.1} s; wrote {} (grid.png)",
            self.images,
            self.solver,
            self.model_evaluations,
            self.seconds,
            self.out.display()
        )
    }
}

pub use crate::pipeline::{default_scheduler_config, scheduler_config_for};

/// Reads `--init-noise`: exactly one float tensor of shape [N, C, H, W].
pub fn load_noise(path: &Path, chw: [i64; 3]) -> Result<Tensor> {
    let fail = |reason: String| Error::NoiseFile {
        path: path.to_path_buf(),
        reason,
    };
    let tensors = tensor::safetensors::load(path, Device::Cpu)?;
    if tensors.len() != 1 {
        let names: Vec<&String> = tensors.keys().collect();
        return Err(fail(format!(
            "expected exactly one tensor (x_T), found {}: {names:?}",
            tensors.len()
        )));
    }
    let (name, t) = tensors.into_iter().next().expect("one tensor");
    let size = t.size();
    if size.len() != 4 || size[1..] != chw || size[0] == 0 {
        return Err(fail(format!(
            "tensor {name:?} has shape {size:?}: expected [N, {}, {}, {}] for this model",
            chw[0], chw[1], chw[2]
        )));
    }
    if !t.is_floating_point() {
        return Err(fail(format!(
            "tensor {name:?} has kind {:?}: expected floats",
            t.kind()
        )));
    }
    Ok(t.to_kind(Kind::Float))
}

/// Parses `--labels` and checks it against the model's class table; with
/// guidance, also returns the unconditional label.
fn class_labels(
    args: &Args,
    pipe: &Pipeline,
    unet: &UNet,
    n: usize,
) -> Result<Option<(Tensor, Option<i64>)>> {
    let guided = args.guidance_scale != 1.0;
    let classes = match unet.config().class_embedding()? {
        None => {
            if args.labels.is_some() || guided {
                return Err(Error::Labels(
                    "--labels and --guidance-scale need a class-conditional model; this one is unconditional"
                        .into(),
                ));
            }
            return Ok(None);
        }
        Some(ClassEmbedding::Table(k)) => k,
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "class embedding {other:?}: the sampler takes integer labels of a class table \
                 (num_class_embeds) only"
            )))
        }
    };
    // With guidance the null label (run.json's, else the last row) is the
    // unconditional one.
    let null = pipe.null_label(unet.config()).unwrap_or(classes - 1);
    let usable = if guided {
        null.min(classes - 1)
    } else {
        classes
    };
    if usable < 1 {
        return Err(Error::Labels(format!(
            "num_class_embeds = {classes} leaves no class besides the unconditional one"
        )));
    }
    let given: Vec<i64> = match &args.labels {
        Some(text) => parse_labels(text, pipe.class_names(), "--labels")?,
        None => (0..usable).collect(),
    };
    if given.is_empty() {
        return Err(Error::Labels("--labels is empty".into()));
    }
    if let Some(bad) = given.iter().find(|&&l| l < 0 || l >= usable) {
        let why = if guided {
            format!(
                "expected 0..={} (label {} is the unconditional one used by guidance)",
                usable - 1,
                null
            )
        } else {
            format!("expected 0..={}", usable - 1)
        };
        return Err(Error::Labels(format!("label {bad} is out of range: {why}")));
    }
    let labels: Vec<i64> = (0..n).map(|i| given[i % given.len()]).collect();
    Ok(Some((Tensor::from_slice(&labels), guided.then_some(null))))
}

/// Samples images as the flags say and writes them.
pub fn run(args: &Args) -> Result<Summary> {
    let start = Instant::now();
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    if args.batch_size == 0 {
        return Err(Error::Unsupported(
            "--batch-size 0: expected at least 1".into(),
        ));
    }
    if let Some(p) = &args.trajectory {
        Format::of(p)?;
    }
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => newest_run(&args.runs_dir)?,
    };
    let args = &Args {
        model: Some(model_dir),
        ..args.clone()
    };
    let model_dir = args.model.as_ref().expect("set above");
    let pipe = Pipeline::open(model_dir)?;
    let config = &pipe.scheduler;
    let options = SolverOptions {
        eta: args.eta,
        use_karras_sigmas: args.karras.then_some(true),
    };
    // Check the solver and its steps before loading the weights.
    let mut solver = by_name(&args.sampler, config, args.steps, &options)?;
    let mut unet = pipe.load_unet(device)?;
    if args.channels_last {
        unet.to_channels_last();
    }
    tensor::amp::check(args.precision, device)?;
    let cfg = unet.config().clone();
    let Some((h, w)) = cfg.sample_hw() else {
        return Err(Error::ModelFolder {
            path: model_dir.clone(),
            reason: "config.json has no sample_size, so the image size is unknown".into(),
        });
    };
    let chw = [cfg.in_channels, h, w];

    // One stream, as a diffusers pipeline with one generator: x_T first,
    // then the noise of stochastic steps.
    tensor::seed::seed_everything(args.seed);
    let x_t = match &args.init_noise {
        Some(path) => {
            let t = load_noise(path, chw)?;
            if let Some(n) = args.num_images {
                if n as i64 != t.size()[0] {
                    return Err(Error::NoiseFile {
                        path: path.clone(),
                        reason: format!("holds {} images but --num-images is {n}", t.size()[0]),
                    });
                }
            }
            t
        }
        None => {
            let n = args.num_images.unwrap_or(16);
            if n == 0 {
                return Err(Error::Unsupported(
                    "--num-images 0: expected at least 1".into(),
                ));
            }
            Tensor::randn(
                [n as i64, chw[0], chw[1], chw[2]],
                (Kind::Float, Device::Cpu),
            )
        }
    };
    let n = x_t.size()[0] as usize;
    let labels = class_labels(args, &pipe, &unet, n)?;

    let evals = solver.timesteps().len();
    let batches = n.div_ceil(args.batch_size);
    let bar = ProgressBar::new((batches * evals) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} model evaluations, {per_sec}, ETA {eta}",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{} {} steps", solver.name(), args.steps));
    let mut recorder = args
        .trajectory
        .as_ref()
        .map(|_| Recorder::new(args.trajectory_images, args.trajectory_frames, evals));
    let model = Autocast::new(&unet, args.precision);
    let mut outputs = Vec::with_capacity(batches);
    for b in 0..batches {
        let lo = b * args.batch_size;
        let len = args.batch_size.min(n - lo) as i64;
        let x = x_t.narrow(0, lo as i64, len).to_device(device);
        let batch_labels = labels
            .as_ref()
            .map(|(l, _)| l.narrow(0, lo as i64, len).to_device(device));
        let conditioning = Conditioning::class(
            batch_labels,
            args.guidance_scale,
            labels.as_ref().and_then(|(_, null)| *null),
        )?;
        let out = sample(
            &model,
            solver.as_mut(),
            &x,
            &conditioning,
            &mut TorchRng,
            &mut |info| {
                bar.inc(1);
                if b == 0 {
                    if let Some(r) = recorder.as_mut() {
                        r.record(info);
                    }
                }
            },
        )?;
        outputs.push(out.to_device(Device::Cpu).to_kind(Kind::Float));
    }
    bar.finish_and_clear();
    let samples = Tensor::cat(&outputs, 0);

    std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
        path: args.out.clone(),
        error: source,
    })?;
    for i in 0..n {
        save_image(
            args.out.join(format!("{i:05}.png")),
            &samples.get(i as i64),
            BitDepth::Eight,
        )?;
    }
    let nrow = (n as f64).sqrt().ceil() as i64;
    save_grid(args.out.join("grid.png"), &samples, nrow)?;
    if let Some(path) = &args.save_tensors {
        tensor::safetensors::save(path, &[("samples", &samples)], None)?;
    }
    if let (Some(path), Some(r)) = (&args.trajectory, &recorder) {
        r.save(path)?;
    }
    Ok(Summary {
        images: n,
        solver: solver.name().to_string(),
        model_evaluations: evals,
        out: args.out.clone(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The newest trainer run under `runs_dir` that has a diffusers export.
pub fn newest_run(runs_dir: &Path) -> Result<PathBuf> {
    let none = || Error::ModelFolder {
        path: runs_dir.to_path_buf(),
        reason: "no --model given and no trained run found here; train one with \
                 `cargo run -p trainer`, or pass --model DIR"
            .into(),
    };
    let entries = std::fs::read_dir(runs_dir).map_err(|_| none())?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|dir| {
            let modified = std::fs::metadata(dir.join("unet/diffusion_pytorch_model.safetensors"))
                .ok()?
                .modified()
                .ok()?;
            Some((modified, dir))
        })
        .max()
        .map(|(_, dir)| dir)
        .ok_or_else(none)
}

/// Parses a comma-separated list of class labels: numbers, or names of
/// `names` (the run's class names); `flag` names the flag in errors.
pub(crate) fn parse_labels(text: &str, names: &[String], flag: &str) -> Result<Vec<i64>> {
    text.split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| names.iter().position(|n| n == s).map(|i| i as i64))
                .ok_or_else(|| {
                    Error::Labels(format!(
                        "{s:?} in {flag} is neither a number nor a class name{}",
                        if names.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", names.join(", "))
                        }
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod run_dir_tests {
    use super::*;

    fn fake_run(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("unet")).unwrap();
        std::fs::write(dir.join("unet/diffusion_pytorch_model.safetensors"), b"x").unwrap();
        dir
    }

    #[test]
    fn newest_run_is_found_and_absence_explained() {
        let root = tempfile::tempdir().unwrap();
        let err = newest_run(root.path()).unwrap_err().to_string();
        assert!(err.contains("no --model given"), "{err}");
        fake_run(root.path(), "old");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let new = fake_run(root.path(), "new");
        std::fs::create_dir_all(root.path().join("not-a-run")).unwrap();
        assert_eq!(newest_run(root.path()).unwrap(), new);
    }
}
