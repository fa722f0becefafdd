//! `lmzh edit --prompt` and `lmzh inpaint --prompt`: editing with a
//! Stable-Diffusion-style pipeline folder, in latent space (see
//! [`crate::text_editing`]).

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
use tensor::{DeviceSpec, Precision};

use super::model::{write_images, write_rows, ClassArgs, ModelArgs};
use crate::factory::{by_name, default_for_config, SolverOptions};
use crate::solver::Solver;
use crate::text_editing::{load_rgb_images, tile_batch};
use crate::text_to_image::{Encoded, Prompts, TextToImage};
use crate::{Error, Result};

/// The flags of prompt-guided editing.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TextArgs {
    /// Edit with a text-to-image pipeline: --model is then a diffusers
    /// StableDiffusionPipeline folder and the result follows this prompt.
    /// Repeat for one result per prompt; "" is the unconditional prompt.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Vec<String>,

    /// What to steer away from (guidance above 1; with --prompt).
    #[arg(long, value_name = "TEXT")]
    pub negative_prompt: Option<String>,

    /// Results per prompt (with --prompt).
    #[arg(long, default_value_t = 1)]
    pub num_images_per_prompt: usize,

    /// diffusers' guidance_rescale, 0 to 1 (with --prompt).
    #[arg(long, default_value_t = 0.0)]
    pub guidance_rescale: f64,

    /// Use the text encoder's layer this many before the last (with --prompt).
    #[arg(long)]
    pub clip_skip: Option<usize>,

    /// Resize the inputs to this height (with --prompt) [default: the first
    /// image's, rounded down to a multiple of 8].
    #[arg(long)]
    pub height: Option<i64>,

    /// Resize the inputs to this width (with --prompt) [default: as --height].
    #[arg(long)]
    pub width: Option<i64>,

    /// fp32, bf16 or fp16: autocast for the U-Net (with --prompt).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,

    /// Also write the final `latents` and decoded `samples` (in [-1, 1]) to
    /// this safetensors file (with --prompt, one strength).
    #[arg(long, value_name = "FILE")]
    pub save_tensors: Option<PathBuf>,
}

impl TextArgs {
    /// Whether `--prompt` was given (the text-to-image path).
    pub fn active(&self) -> bool {
        !self.prompt.is_empty()
    }

    /// Errors when a flag of the text path is given without `--prompt`.
    pub fn check_unused(&self) -> Result<()> {
        let given = [
            ("--negative-prompt", self.negative_prompt.is_some()),
            ("--num-images-per-prompt", self.num_images_per_prompt != 1),
            ("--guidance-rescale", self.guidance_rescale != 0.0),
            ("--clip-skip", self.clip_skip.is_some()),
            ("--height", self.height.is_some()),
            ("--width", self.width.is_some()),
            ("--precision", self.precision != Precision::Fp32),
            ("--save-tensors", self.save_tensors.is_some()),
        ];
        match given.iter().find(|(_, g)| *g) {
            Some((flag, _)) => Err(Error::Unsupported(format!(
                "{flag} applies to text-guided editing: give --prompt and a Stable Diffusion \
                 pipeline as --model"
            ))),
            None => Ok(()),
        }
    }
}

/// A loaded pipeline and the encoded prompts of a text-guided edit.
#[derive(Debug)]
pub struct TextEdit {
    pub pipe: TextToImage,
    pub encoded: Encoded,
    pub precision: Precision,
    pub device: Device,
}

impl TextEdit {
    /// Loads `--model` and encodes the prompts (guidance default 7.5).
    pub fn open(model: &ModelArgs, class: &ClassArgs, text: &TextArgs) -> Result<Self> {
        if class.labels.is_some() {
            return Err(Error::Labels(
                "--labels is for class-conditional models; with --prompt the text guides".into(),
            ));
        }
        let Some(dir) = &model.model else {
            return Err(Error::Unsupported(
                "--prompt needs --model DIR, a diffusers StableDiffusionPipeline folder".into(),
            ));
        };
        if !(0.0..=1.0).contains(&text.guidance_rescale) {
            return Err(Error::Unsupported(format!(
                "--guidance-rescale {}: expected 0 to 1",
                text.guidance_rescale
            )));
        }
        let device = model.device.parse::<DeviceSpec>()?.resolve()?;
        tensor::amp::check(text.precision, device)?;
        let pipe = TextToImage::load(dir, device)?;
        let encoded = pipe.encode(&Prompts {
            prompts: text.prompt.clone(),
            negative_prompt: text.negative_prompt.clone(),
            guidance_scale: class.guidance_scale.unwrap_or(7.5),
            guidance_rescale: text.guidance_rescale,
            images_per_prompt: text.num_images_per_prompt,
            clip_skip: text.clip_skip,
        })?;
        for w in &encoded.warnings {
            tracing::warn!("{w}");
        }
        Ok(TextEdit {
            pipe,
            encoded,
            precision: text.precision,
            device,
        })
    }

    /// The input images, resized as the flags say (`[n, 3, H, W]` in [-1, 1]).
    pub fn load_images(&self, paths: &[PathBuf], text: &TextArgs) -> Result<Tensor> {
        let size = match (text.height, text.width) {
            (None, None) => None,
            (h, w) => Some((h.or(w).unwrap_or(0), w.or(h).unwrap_or(0))),
        };
        load_rgb_images(paths, size, self.pipe.vae_scale_factor())
    }

    /// The solver: `--sampler`, else the pipeline's scheduler class.
    pub fn solver(&self, name: Option<&str>, steps: usize, eta: f64) -> Result<Box<dyn Solver>> {
        let name = name
            .or_else(|| default_for_config(&self.pipe.scheduler))
            .unwrap_or("ddim");
        by_name(
            name,
            &self.pipe.scheduler,
            steps,
            &SolverOptions {
                eta,
                ..SolverOptions::default()
            },
        )
    }

    /// `[c, h, w]` of the latents of `images`.
    pub fn latent_chw(&self, images: &Tensor) -> [i64; 3] {
        let f = self.pipe.vae_scale_factor();
        let size = images.size();
        [self.pipe.latent_channels(), size[2] / f, size[3] / f]
    }

    /// Decodes final latents to images in [-1, 1] on the CPU.
    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        Ok(self.pipe.decode(latents)? * 2.0 - 1.0)
    }
}

/// Where one run's outputs go.
#[derive(Debug)]
pub struct Outputs<'a> {
    pub out: &'a Path,
    pub compare: Option<&'a Path>,
    pub save_tensors: Option<&'a Path>,
}

/// Writes the results (one row per strength), the before/after grid (the
/// inputs, `extra_row` if any, then the results) and the tensors; returns
/// the number of images written.
pub fn write_outputs(
    edit: &TextEdit,
    inputs: &Tensor,
    extra_row: Option<Tensor>,
    latents: &[Tensor],
    outputs: &Outputs<'_>,
) -> Result<usize> {
    let batch = edit.encoded.batch;
    let rows: Vec<Tensor> = latents
        .iter()
        .map(|l| edit.decode(l))
        .collect::<Result<_>>()?;
    let all = Tensor::f_cat(&rows, 0)?;
    write_images(outputs.out, &all, batch)?;
    if let Some(path) = outputs.compare {
        let inputs = tile_batch(&inputs.to_device(Device::Cpu), batch, "input images")?;
        let mut grid = vec![inputs];
        grid.extend(extra_row);
        grid.extend(rows.iter().map(Tensor::shallow_clone));
        write_rows(path, &grid)?;
    }
    if let Some(path) = outputs.save_tensors {
        let cpu = latents[0].to_device(Device::Cpu);
        tensor::safetensors::save(path, &[("latents", &cpu), ("samples", &rows[0])], None)?;
    }
    Ok(all.size()[0] as usize)
}
