//! Text to image with a Stable-Diffusion-style pipeline folder, as
//! diffusers' `StableDiffusionPipeline` does it: prompts -> CLIP tokenizer
//! -> CLIP text encoder -> prompt embeddings (with the negative or empty
//! prompt's for classifier-free guidance) -> the sampling loop on the
//! `UNet2DConditionModel` from latents -> VAE decode -> images.
//!
//! The folder is a diffusers `StableDiffusionPipeline` save (`model_index.json`,
//! `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`); the
//! safety checker and feature extractor are not used.
//!
//! A pipeline in **pixel space** (what the trainer writes for a
//! text-conditioned run) has no `vae/` and `"vae": [null, null]` in its
//! `model_index.json`: its U-Net denoises the images themselves
//! (`in_channels` image channels, any number), and decoding is the identity
//! (clamped to [-1, 1], then mapped to [0, 1]). Each of its components loads
//! in diffusers or transformers on its own.

use std::path::{Path, PathBuf};

use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use text::{ClipTextModel, ClipTokenizer, DType};
use unet::ConditionUNet;
use vae::Vae;

use crate::denoiser::Cond;
use crate::guidance::{Conditioning, Guidance};
use crate::pipeline::{scheduler_config_for, ModelIndex};
use crate::{Error, Result};

/// The pipeline classes whose folders this module reads.
const SUPPORTED: &[&str] = &[
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
];

/// A loaded text-to-image pipeline.
#[derive(Debug)]
pub struct TextToImage {
    pub root: PathBuf,
    /// The pipeline class of `model_index.json` (`StableDiffusionPipeline`, ...).
    pub class_name: String,
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub unet: ConditionUNet,
    /// The VAE of a latent-space pipeline; `None` for one in pixel space.
    pub vae: Option<Vae>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler: SchedulerConfig,
    /// Its `_class_name` (e.g. `PNDMScheduler`), when the file names one.
    pub scheduler_class: Option<String>,
}

/// What to generate: the prompts and the guidance.
#[derive(Debug, Clone)]
pub struct Prompts {
    /// One or more prompts; each gives `images_per_prompt` images.
    pub prompts: Vec<String>,
    /// What to steer away from (the empty prompt when `None`), shared by
    /// every prompt.
    pub negative_prompt: Option<String>,
    /// Classifier-free guidance scale; 1 (or below): no guidance.
    pub guidance_scale: f64,
    /// diffusers' `guidance_rescale` (see [`Guidance::rescale`]).
    pub guidance_rescale: f64,
    pub images_per_prompt: usize,
    /// Use the output of the layer this many before the last (diffusers'
    /// `clip_skip`; the negative prompt's embedding does not use it, as in
    /// diffusers).
    pub clip_skip: Option<usize>,
}

/// The batch's conditioning and the warnings of its prompts.
#[derive(Debug)]
pub struct Encoded {
    pub conditioning: Conditioning,
    /// One line per prompt that was cut to the tokenizer's length.
    pub warnings: Vec<String>,
    /// The number of images (`prompts × images_per_prompt`).
    pub batch: i64,
}

impl TextToImage {
    /// Loads every component of the pipeline folder `dir` onto `device`
    /// (f32 weights). Errors name the folder and the missing or
    /// unsupported part.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let fail = |reason: String| Error::ModelFolder {
            path: root.clone(),
            reason,
        };
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(fail(
                "no model_index.json: a text-to-image model is a diffusers pipeline folder \
                 (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"
                    .into(),
            ));
        }
        let text = std::fs::read_to_string(&index_path).map_err(|e| Error::Io {
            path: index_path.clone(),
            error: e,
        })?;
        let index: ModelIndex = serde_json::from_str(&text).map_err(|e| Error::ModelFolder {
            path: index_path.clone(),
            reason: format!("not a diffusers model_index.json: {e}"),
        })?;
        if !SUPPORTED.contains(&index.class_name.as_str()) {
            return Err(fail(format!(
                "a {} folder: text to image reads {} folders (Stable Diffusion 1.x and 2.x)",
                index.class_name,
                SUPPORTED.join(", ")
            )));
        }
        // Pixel space: the index says there is no VAE (null or absent) and
        // there is no vae/ folder.
        let pixel_space = index.component("vae").is_none() && !root.join("vae").is_dir();
        for part in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
            if part == "vae" && pixel_space {
                continue;
            }
            if !root.join(part).is_dir() {
                return Err(fail(format!("the pipeline has no {part}/ folder")));
            }
        }
        let tokenizer = ClipTokenizer::from_folder(root.join("tokenizer"))?;
        let text_encoder = ClipTextModel::load(root.join("text_encoder"), device, DType::F32)?;
        let unet = ConditionUNet::load(root.join("unet"), device)?;
        let vae = if pixel_space {
            None
        } else {
            Some(Vae::load(root.join("vae"), device)?)
        };
        let scheduler = scheduler_config_for(&root)?;
        let scheduler_class = scheduler
            .extra
            .get("_class_name")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        let width = unet.config().encoder_width();
        let hidden = text_encoder.dims().hidden_size;
        if width != hidden {
            return Err(fail(format!(
                "the U-Net's cross_attention_dim is {width} but the text encoder's hidden_size \
                 is {hidden}"
            )));
        }
        Ok(TextToImage {
            root,
            class_name: index.class_name,
            tokenizer,
            text_encoder,
            unet,
            vae,
            scheduler,
            scheduler_class,
        })
    }

    /// Writes the pipeline as a diffusers folder at `dir`, which must not
    /// exist: `model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `scheduler/` and `tokenizer/` (the tokenizer files of the folder it
    /// was loaded from), loadable by diffusers' `from_pretrained`. Written
    /// into a temporary sibling folder that is renamed at the end, so a
    /// failed save leaves no half-written pipeline.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Io { path, error }
        };
        if dir.exists() {
            return Err(Error::Output {
                path: dir.to_path_buf(),
                reason: "already exists; a pipeline is saved into a new folder".into(),
            });
        }
        let tmp = tensor::fs::temp_path(dir);
        let result = (|| -> Result<()> {
            std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
            self.unet.save(tmp.join("unet"))?;
            if let Some(vae) = &self.vae {
                vae.save(tmp.join("vae"))?;
            }
            self.text_encoder.save(tmp.join("text_encoder"))?;
            let scheduler = tmp.join("scheduler");
            std::fs::create_dir_all(&scheduler).map_err(io(&scheduler))?;
            self.scheduler
                .save(scheduler.join("scheduler_config.json"))?;
            let (from, to) = (self.root.join("tokenizer"), tmp.join("tokenizer"));
            std::fs::create_dir_all(&to).map_err(io(&to))?;
            for entry in std::fs::read_dir(&from).map_err(io(&from))? {
                let path = entry.map_err(io(&from))?.path();
                if path.is_file() {
                    let target = to.join(path.file_name().unwrap_or_default());
                    std::fs::copy(&path, &target).map_err(io(&path))?;
                }
            }
            let scheduler_class = self
                .scheduler_class
                .clone()
                .unwrap_or_else(|| "DDIMScheduler".into());
            let index = serde_json::json!({
                "_class_name": self.class_name,
                "_diffusers_version": "0.42.1",
                "feature_extractor": [null, null],
                "image_encoder": [null, null],
                "requires_safety_checker": false,
                "safety_checker": [null, null],
                "scheduler": ["diffusers", scheduler_class],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": match self.vae {
                    Some(_) => serde_json::json!(["diffusers", "AutoencoderKL"]),
                    None => serde_json::json!([null, null]),
                },
            });
            let text = serde_json::to_string_pretty(&index).unwrap_or_default() + "\n";
            tensor::fs::write_bytes_atomic(&tmp.join("model_index.json"), text.as_bytes())?;
            std::fs::rename(&tmp, dir).map_err(io(dir))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Pixels per latent cell (8 for Stable Diffusion; 1 in pixel space).
    pub fn vae_scale_factor(&self) -> i64 {
        match &self.vae {
            Some(vae) => 1 << (vae.config().block_out_channels.len().saturating_sub(1)),
            None => 1,
        }
    }

    /// Channels of what the U-Net denoises: the VAE's latent channels, or
    /// in pixel space the U-Net's own input channels.
    pub fn latent_channels(&self) -> i64 {
        match &self.vae {
            Some(vae) => vae.config().latent_channels,
            None => self.unet.config().in_channels,
        }
    }

    /// The VAE, for what needs one (editing images in latent space); an
    /// error naming the folder for a pipeline in pixel space.
    pub fn latent_vae(&self) -> Result<&Vae> {
        self.vae.as_ref().ok_or_else(|| Error::ModelFolder {
            path: self.root.clone(),
            reason: "a pipeline in pixel space (no vae/) cannot encode images: editing needs a \
                     latent-space pipeline"
                .into(),
        })
    }

    /// The default `(height, width)`: the U-Net's `sample_size` times the
    /// VAE factor (512 x 512 for SD 1.x).
    pub fn default_size(&self) -> (i64, i64) {
        let (h, w) = self.unet.config().sample_hw().unwrap_or((64, 64));
        let f = self.vae_scale_factor();
        (h * f, w * f)
    }

    /// The shape of the latents of `n` images of `height x width` pixels;
    /// errors (naming the flag-free field) unless both are positive
    /// multiples of the VAE factor.
    pub fn latent_shape(&self, n: i64, height: i64, width: i64) -> Result<[i64; 4]> {
        let f = self.vae_scale_factor();
        for (name, v) in [("height", height), ("width", width)] {
            if v <= 0 || v % f != 0 {
                return Err(Error::Shape(format!(
                    "{name} {v}: expected a positive multiple of {f} (the VAE's factor)"
                )));
            }
        }
        Ok([n, self.unet.config().in_channels, height / f, width / f])
    }

    /// The prompt embeddings of `prompts` (`[N, 77, D]`) and a warning for
    /// each prompt cut to the tokenizer's length.
    pub fn embed(
        &self,
        prompts: &[String],
        clip_skip: Option<usize>,
    ) -> Result<(Tensor, Vec<String>)> {
        let encodings = self.tokenizer.encode_batch(prompts)?;
        let warnings = encodings
            .iter()
            .filter_map(|e| e.truncation_warning())
            .collect();
        let device = self.text_encoder.device();
        let (ids, mask) = text::batch_tensors(&encodings, device)?;
        // diffusers passes the mask only to encoders whose config asks for it
        // (`use_attention_mask`); CLIP's causal mask makes padding harmless.
        let use_mask = self
            .text_encoder
            .config
            .extra
            .get("use_attention_mask")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mask = use_mask.then_some(&mask);
        let embeds = tch::no_grad(|| self.text_encoder.prompt_embeds(&ids, mask, clip_skip))?;
        Ok((embeds, warnings))
    }

    /// The conditioning of a batch, as diffusers' `encode_prompt` makes it:
    /// each prompt's embedding repeated `images_per_prompt` times (p1, p1,
    /// p2, p2, ...), and with guidance the negative (or empty) prompt's.
    pub fn encode(&self, p: &Prompts) -> Result<Encoded> {
        if p.prompts.is_empty() {
            return Err(Error::Labels("no prompt given".into()));
        }
        if p.images_per_prompt == 0 {
            return Err(Error::Labels("images_per_prompt must be at least 1".into()));
        }
        let (embeds, mut warnings) = self.embed(&p.prompts, p.clip_skip)?;
        let repeat = p.images_per_prompt as i64;
        let embeds = embeds.f_repeat_interleave_self_int(repeat, Some(0), None)?;
        let batch = embeds.size()[0];
        let cond = Cond::text(embeds, None);
        let conditioning = if p.guidance_scale > 1.0 {
            let negative = p.negative_prompt.clone().unwrap_or_default();
            let (uncond, w) = self.embed(&[negative], None)?;
            warnings.extend(w);
            Conditioning {
                cond,
                guidance: Some(Guidance {
                    rescale: p.guidance_rescale,
                    ..Guidance::new(p.guidance_scale, Cond::text(uncond, None))
                }),
            }
        } else {
            Conditioning::from(cond)
        };
        Ok(Encoded {
            conditioning,
            warnings,
            batch,
        })
    }

    /// Images in [0, 1] (`[N, 3, H, W]`, f32 on the CPU; in pixel space
    /// `[N, C, H, W]` with the U-Net's channels) of final latents, as
    /// diffusers' `output_type="pt"` gives them.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let images = match &self.vae {
            Some(vae) => vae.decode_latents(latents)?,
            None => latents.f_clamp(-1.0, 1.0)?,
        };
        Ok((images.f_to_kind(Kind::Float)? / 2.0 + 0.5)
            .f_clamp(0.0, 1.0)?
            .f_to_device(Device::Cpu)?)
    }
}
