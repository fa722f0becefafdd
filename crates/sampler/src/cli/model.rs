//! What the editing commands share: the model folder (U-Net, scheduler
//! config, input preprocessing, class names), class labels, the progress
//! bar and the writing of results.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use tensor::image::{make_grid, save_image, BitDepth};
use tensor::DeviceSpec;
use unet::config::ClassEmbedding;
use unet::UNet;

use super::{newest_run, parse_labels};
use crate::denoiser::Denoiser;
use crate::guidance::Conditioning;
use crate::input::InputSpec;
use crate::pipeline::Pipeline;
use crate::{Error, Result};

/// The model flags of every editing command.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A diffusers pipeline folder (model_index.json, unet/, scheduler/) or
    /// UNet2DModel folder, such as a trainer run folder or
    /// assets/models/digits [default: the newest run under --runs-dir].
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,

    /// Where the trainer writes its runs (used when --model is not given).
    #[arg(long, value_name = "DIR", default_value = "runs")]
    pub runs_dir: PathBuf,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Seed of the noise (libtorch's CPU generator).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Class conditioning flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClassArgs {
    /// Class labels of a class-conditional model, comma-separated, repeated
    /// over the images: numbers, or class names from the run's run.json
    /// [default: the unconditional (null) label].
    #[arg(long, visible_alias = "class-labels", value_name = "LIST")]
    pub labels: Option<String>,

    /// Classifier-free guidance scale s (uncond + s (cond - uncond)); 1 is no
    /// guidance. Needs --labels or --prompt [default: 1 with --labels, 7.5
    /// with --prompt].
    #[arg(long)]
    pub guidance_scale: Option<f64>,
}

impl ClassArgs {
    /// The guidance scale of class conditioning: `--guidance-scale`, else 1.
    pub fn scale(&self) -> f64 {
        self.guidance_scale.unwrap_or(1.0)
    }
}

/// A loaded model folder.
#[derive(Debug)]
pub struct LoadedModel {
    /// The folder given (or the newest run).
    pub dir: PathBuf,
    pub unet: UNet,
    /// The pipeline's scheduler config (or diffusers' default DDPM one).
    pub scheduler: SchedulerConfig,
    /// How input images are preprocessed for it.
    pub input: InputSpec,
    pub device: Device,
    class_names: Vec<String>,
    /// Rows of the class table, for class-conditional models.
    classes: Option<i64>,
    null_label: Option<i64>,
}

impl LoadedModel {
    /// Loads the model the flags name.
    pub fn open(args: &ModelArgs) -> Result<Self> {
        let device = args.device.parse::<DeviceSpec>()?.resolve()?;
        let dir = match &args.model {
            Some(dir) => dir.clone(),
            None => newest_run(&args.runs_dir)?,
        };
        let pipe = Pipeline::open(&dir)?;
        if let Some(index) = pipe.model_index.as_ref() {
            if index.class_name.starts_with("StableDiffusion") {
                return Err(Error::ModelFolder {
                    path: dir,
                    reason: format!(
                        "a {} folder (text to image): give --prompt (\"\" for the \
                         unconditional prompt)",
                        index.class_name
                    ),
                });
            }
        }
        let unet = pipe.load_unet(device)?;
        let cfg = unet.config();
        let Some((h, w)) = cfg.sample_hw() else {
            return Err(Error::ModelFolder {
                path: dir,
                reason: "config.json has no sample_size, so the image size is unknown".into(),
            });
        };
        let input = pipe.input_spec([cfg.in_channels, h, w])?;
        let classes = match cfg.class_embedding()? {
            None => None,
            Some(ClassEmbedding::Table(k)) => Some(k),
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "class embedding {other:?}: the editing commands take integer labels of a \
                     class table (num_class_embeds) only"
                )))
            }
        };
        let class_names = pipe.class_names().to_vec();
        let null_label = pipe.null_label(cfg);
        let scheduler = pipe.scheduler.clone();
        Ok(LoadedModel {
            dir,
            unet,
            scheduler,
            input,
            device,
            class_names,
            classes,
            null_label,
        })
    }

    /// The model as the sampling functions take it.
    pub fn model(&self) -> &dyn Denoiser {
        &self.unet
    }

    /// The conditioning of `n` images from the class flags (see
    /// [`LoadedModel::labels`]), guided towards them with the null label.
    pub fn conditioning(&self, class: &ClassArgs, n: usize) -> Result<Conditioning> {
        self.conditioning_from(class, n, "--labels")
    }

    /// [`LoadedModel::conditioning`] with the flag named `flag` in errors.
    pub fn conditioning_from(
        &self,
        class: &ClassArgs,
        n: usize,
        flag: &str,
    ) -> Result<Conditioning> {
        let labels = self.labels_from(class, n, flag)?;
        Conditioning::class(labels, class.scale(), self.null_label)
    }

    /// The unconditional label of a class-conditional model: run.json's
    /// `null_label`, else the last row of the class table.
    pub fn null_label(&self) -> Option<i64> {
        self.null_label
    }

    /// The labels of `n` images from `--labels` (cycled), or the null label
    /// for each when none are given; `None` for an unconditional model.
    pub fn labels(&self, class: &ClassArgs, n: usize) -> Result<Option<Tensor>> {
        self.labels_from(class, n, "--labels")
    }

    /// [`LoadedModel::labels`] with the flag named `flag` in errors.
    pub fn labels_from(&self, class: &ClassArgs, n: usize, flag: &str) -> Result<Option<Tensor>> {
        let guided = class.scale() != 1.0;
        let Some(k) = self.classes else {
            if class.labels.is_some() || guided {
                return Err(Error::Labels(format!(
                    "{flag} and --guidance-scale need a class-conditional model; this one is \
                     unconditional"
                )));
            }
            return Ok(None);
        };
        let null = self.null_label.unwrap_or(k - 1);
        let given = match &class.labels {
            Some(text) => parse_labels(text, &self.class_names, flag)?,
            None if guided => {
                return Err(Error::Labels(format!(
                    "--guidance-scale needs {flag} (guidance pulls towards a class)"
                )))
            }
            None => vec![null],
        };
        if given.is_empty() {
            return Err(Error::Labels(format!("{flag} is empty")));
        }
        if let Some(bad) = given.iter().find(|&&l| l < 0 || l >= k) {
            return Err(Error::Labels(format!(
                "label {bad} is out of range: expected 0..={} ({} is the unconditional one)",
                k - 1,
                null
            )));
        }
        let labels: Vec<i64> = (0..n).map(|i| given[i % given.len()]).collect();
        Ok(Some(Tensor::from_slice(&labels).to_device(self.device)))
    }

    /// Loads and preprocesses images into one batch `[N, C, H, W]` on the
    /// model's device.
    pub fn load_images(&self, paths: &[PathBuf]) -> Result<Tensor> {
        if paths.is_empty() {
            return Err(Error::Unsupported("no input image given".into()));
        }
        let images: Vec<Tensor> = paths
            .iter()
            .map(|p| self.input.load(p))
            .collect::<Result<_>>()?;
        Ok(Tensor::f_stack(&images, 0)?.f_to_device(self.device)?)
    }

    /// `[C, H, W]` of the model's samples.
    pub fn chw(&self) -> [i64; 3] {
        self.input.chw
    }
}

/// A progress bar over `len` model evaluations.
pub fn progress_bar(len: usize, message: String) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} model evaluations, {per_sec}, ETA {eta}",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Draws standard-normal noise of `shape` from libtorch's CPU generator
/// (seeded by the caller) and moves it to `device`.
pub fn cpu_noise(shape: &[i64], device: Device) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_device(device)
}

/// Writes results `[N, C, H, W]` to `path`: the image itself when N = 1,
/// else one row of N images. Creates the folder; atomic.
pub fn write_images(path: &Path, images: &Tensor, nrow: i64) -> Result<()> {
    create_parent(path)?;
    let images = images.to_device(Device::Cpu).to_kind(Kind::Float);
    if images.size()[0] == 1 {
        save_image(path, &images.get(0), BitDepth::Eight)?;
    } else {
        let grid = make_grid(&images, nrow, 2, 0.0)?;
        save_image(path, &grid, BitDepth::Eight)?;
    }
    Ok(())
}

/// Writes rows of images (each `[N, C, H, W]`, same N) as one grid: row
/// after row, N columns, 2 pixels of grey between them.
pub fn write_rows(path: &Path, rows: &[Tensor]) -> Result<()> {
    create_parent(path)?;
    let rows: Vec<Tensor> = rows
        .iter()
        .map(|r| r.to_device(Device::Cpu).to_kind(Kind::Float))
        .collect();
    let n = rows.first().map_or(1, |r| r.size()[0]);
    let grid = make_grid(&Tensor::f_cat(&rows, 0)?, n, 2, 0.0)?;
    save_image(path, &grid, BitDepth::Eight)?;
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            error: source,
        })?;
    }
    Ok(())
}

/// Mean squared error between two batches in [0, 1] pixel units (after
/// clipping to [-1, 1]).
pub fn mse_pixels(a: &Tensor, b: &Tensor) -> f64 {
    let p = |x: &Tensor| {
        (x.to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .clamp(-1.0, 1.0)
            + 1.0)
            / 2.0
    };
    (p(a) - p(b)).square().mean(Kind::Double).double_value(&[])
}
