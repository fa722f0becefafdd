//! What a run trains: a `UNet2DModel` (unconditional or class-conditional),
//! or for text conditioning a `UNet2DConditionModel` and the CLIP text
//! encoder whose hidden states it attends to, trained together from
//! scratch, with CLIP's tokenizer (the vocabulary bundled in
//! `assets/clip-vocab`); in latent mode with a frozen `AutoencoderKL`
//! whose latents the U-Net denoises.
//!
//! The parameters of a text model are named `unet.NAME` and
//! `text_encoder.NAME` in one list (the order of the optimiser state, the
//! EMA and the checkpoint); a plain model's keep their U-Net names.

use std::io::Read;
use std::path::Path;

use tch::{Device, Tensor};
use text::{ClipTextModel, ClipTokenizer, DType};
use unet::{ConditionUNet, UNet};
use vae::{LatentDraw, Vae};

use crate::{Error, Result};

/// The bundled CLIP tokenizer files: (name in a tokenizer folder, bytes,
/// gzipped).
const CLIP_VOCAB: &[(&str, &[u8], bool)] = &[
    (
        "vocab.json",
        include_bytes!("../../../assets/clip-vocab/vocab.json.gz"),
        true,
    ),
    (
        "merges.txt",
        include_bytes!("../../../assets/clip-vocab/merges.txt.gz"),
        true,
    ),
    (
        "special_tokens_map.json",
        include_bytes!("../../../assets/clip-vocab/special_tokens_map.json"),
        false,
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../../assets/clip-vocab/tokenizer_config.json"),
        false,
    ),
];

/// Writes CLIP's tokenizer (the bundled vocabulary, ungzipped) into `dir`
/// as a transformers `CLIPTokenizer` folder that pads and cuts to
/// `max_length` tokens, and loads it.
pub fn write_clip_tokenizer(dir: &Path, max_length: usize) -> Result<ClipTokenizer> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes, gzipped) in CLIP_VOCAB {
        let path = dir.join(name);
        let mut data = Vec::new();
        if *gzipped {
            flate2::read::GzDecoder::new(*bytes)
                .read_to_end(&mut data)
                .map_err(|e| Error::io(&path, e))?;
        } else {
            data = bytes.to_vec();
        }
        if *name == "tokenizer_config.json" {
            let mut v: serde_json::Value =
                serde_json::from_slice(&data).map_err(|e| Error::Setting {
                    key: "tokenizer".into(),
                    reason: format!("the bundled {name} does not parse: {e}"),
                })?;
            v["model_max_length"] = max_length.into();
            data = serde_json::to_vec_pretty(&v).unwrap_or_default();
        }
        tensor::fs::write_bytes_atomic(&path, &data)?;
    }
    Ok(ClipTokenizer::from_folder(dir)?)
}

/// CLIP's tokenizer padding and cutting to `max_length` tokens, without a
/// folder to keep: written to a temporary folder that is removed after.
pub fn clip_tokenizer(max_length: usize) -> Result<ClipTokenizer> {
    let dir = tensor::fs::temp_path(&std::env::temp_dir().join("lmzh-clip-tokenizer"));
    let tokenizer = write_clip_tokenizer(&dir, max_length);
    let _ = std::fs::remove_dir_all(&dir);
    tokenizer
}

/// A text-to-image model: the U-Net, the text encoder and the tokenizer,
/// and in latent mode the (frozen) VAE whose latents the U-Net denoises.
#[derive(Debug)]
pub struct TextModel {
    pub unet: ConditionUNet,
    pub text_encoder: ClipTextModel,
    pub tokenizer: ClipTokenizer,
    /// The text encoder trains with the U-Net (else it is frozen).
    pub train_text_encoder: bool,
    /// Latent mode: the VAE, frozen. `None`: pixel space.
    pub vae: Option<Vae>,
}

impl TextModel {
    /// The models of a Stable-Diffusion-style pipeline folder (`unet/`,
    /// `text_encoder/`, `tokenizer/`, and `vae/` where it has one), for
    /// fine-tuning: the U-Net trainable, the VAE frozen, the text encoder
    /// trainable only with `train_text_encoder`. Errors name the setting
    /// `model.text.init_from` and the folder.
    pub fn from_pipeline(dir: &Path, device: Device, train_text_encoder: bool) -> Result<Self> {
        let bad = |part: &str, e: &dyn std::fmt::Display| Error::Setting {
            key: "model.text.init_from".into(),
            reason: format!("{}: {e}", dir.join(part).display()),
        };
        let mut unet =
            ConditionUNet::load(dir.join("unet"), device).map_err(|e| bad("unet", &e))?;
        unet.vs.unfreeze();
        let mut text_encoder = ClipTextModel::load(dir.join("text_encoder"), device, DType::F32)
            .map_err(|e| bad("text_encoder", &e))?;
        if train_text_encoder {
            text_encoder.vs.unfreeze();
        } else {
            text_encoder.vs.freeze();
        }
        let tokenizer =
            ClipTokenizer::from_folder(dir.join("tokenizer")).map_err(|e| bad("tokenizer", &e))?;
        let vae = if dir.join("vae").is_dir() {
            let mut vae = Vae::load(dir.join("vae"), device).map_err(|e| bad("vae", &e))?;
            vae.vs.freeze();
            Some(vae)
        } else {
            None
        };
        let width = unet.config().encoder_width();
        let hidden = text_encoder.config.dims().map_or(0, |d| d.hidden_size);
        if width != hidden {
            return Err(bad(
                "unet",
                &format!(
                    "its cross_attention_dim {width} is not the text encoder's hidden_size {hidden}"
                ),
            ));
        }
        Ok(TextModel {
            unet,
            text_encoder,
            tokenizer,
            train_text_encoder,
            vae,
        })
    }

    /// What the U-Net denoises of `images` (`[N, C, H, W]` in [-1, 1]): the
    /// images themselves, or in latent mode a draw from the VAE's posterior
    /// scaled as the pipelines scale it (diffusers' training scripts:
    /// `vae.encode(x).latent_dist.sample() * scaling_factor`), drawn from
    /// libtorch's global generator, without gradients.
    pub fn model_input(&self, images: &Tensor) -> Result<Tensor> {
        match &self.vae {
            None => Ok(images.shallow_clone()),
            Some(vae) => vae
                .encode_latents(images, LatentDraw::Sample)
                .map_err(latent_error),
        }
    }

    /// Images (`[N, C, H, W]`, about [-1, 1]) of what the U-Net produced:
    /// decoded by the VAE in latent mode.
    pub fn to_images(&self, x: &Tensor) -> Result<Tensor> {
        match &self.vae {
            None => Ok(x.shallow_clone()),
            Some(vae) => vae.decode_latents(x).map_err(latent_error),
        }
    }

    /// The token ids (`[N, max_length]`, on `device`) of `captions`.
    pub fn token_ids(&self, captions: &[String], device: Device) -> Result<Tensor> {
        let encodings = self.tokenizer.encode_batch(captions)?;
        let (ids, _mask) = text::batch_tensors(&encodings, device)?;
        Ok(ids)
    }

    /// The U-Net's `encoder_hidden_states` of `captions` (`[N, L, D]`):
    /// with gradients when the text encoder trains and `grad` is true.
    pub fn encode(&self, captions: &[String], grad: bool) -> Result<Tensor> {
        let ids = self.token_ids(captions, self.text_encoder.device())?;
        if grad && self.train_text_encoder {
            Ok(self.text_encoder.prompt_embeds(&ids, None, None)?)
        } else {
            Ok(tch::no_grad(|| {
                self.text_encoder.prompt_embeds(&ids, None, None)
            })?)
        }
    }
}

/// An error of latent mode's VAE, named by its setting.
fn latent_error(e: vae::Error) -> Error {
    Error::Setting {
        key: "model.text.vae".into(),
        reason: e.to_string(),
    }
}

/// The model a run trains.
#[derive(Debug)]
// One per run, never moved in a loop: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    /// A `UNet2DModel`, unconditional or class-conditional.
    Plain(UNet),
    /// A `UNet2DConditionModel` with its text encoder.
    Text(TextModel),
}

/// `vs`'s variables by name with `prefix` put before each name.
fn prefixed(vs: &tch::nn::VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect()
}

impl Model {
    /// Every tensor of the model (buffers included) by name, in name order.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        let mut v = match self {
            Model::Plain(u) => u.vs.variables().into_iter().collect(),
            Model::Text(m) => {
                let mut v = prefixed(&m.unet.vs, "unet.");
                v.extend(prefixed(&m.text_encoder.vs, "text_encoder."));
                v
            }
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The trained tensors by name, in name order: the text encoder's only
    /// when it trains.
    pub fn trainable_params(&self) -> Vec<(String, Tensor)> {
        match self {
            Model::Plain(u) => trainable_params(u),
            Model::Text(m) => {
                let mut v = prefixed(&m.unet.vs, "unet.");
                if m.train_text_encoder {
                    v.extend(prefixed(&m.text_encoder.vs, "text_encoder."));
                }
                v.retain(|(_, t)| t.requires_grad());
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            }
        }
    }

    /// Writes the diffusers/transformers model folders under `root`:
    /// `unet/`, and `text_encoder/` for a text model (the frozen VAE of
    /// latent mode is written once, with the run's other files).
    pub fn save(&self, root: &Path) -> Result<()> {
        match self {
            Model::Plain(u) => u.save(root.join("unet"))?,
            Model::Text(m) => {
                m.unet.save(root.join("unet"))?;
                m.text_encoder.save(root.join("text_encoder"))?;
            }
        }
        Ok(())
    }

    /// The plain U-Net, when that is what the run trains.
    pub fn unet(&self) -> Option<&UNet> {
        match self {
            Model::Plain(u) => Some(u),
            Model::Text(_) => None,
        }
    }

    /// The text model, when the run is text-conditioned.
    pub fn text(&self) -> Option<&TextModel> {
        match self {
            Model::Plain(_) => None,
            Model::Text(m) => Some(m),
        }
    }
}

/// The model's trained tensors by name, in name order (the order of the
/// optimiser state, the EMA and the gradient buckets).
pub fn trainable_params(unet: &UNet) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = unet
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}
