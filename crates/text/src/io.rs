//! [`ClipTextModel`]: transformers' `CLIPTextModel` together with the
//! `VarStore` that owns its weights, loaded from (and saved to) a
//! transformers folder.
//!
//! A text encoder folder holds `config.json` and `model.safetensors`; a
//! diffusers pipeline folder (with `text_encoder/`) is accepted too.
//! Variables are named as the state-dict keys of transformers 4, which every
//! Stable Diffusion checkpoint uses (`text_model.embeddings.token_embedding.
//! weight`, `text_model.encoder.layers.0.self_attn.q_proj.weight`, ...);
//! files written by transformers 5, which leaves the `text_model.` prefix
//! out, load too. The `position_ids` buffer that older checkpoints carry is
//! ignored; any other missing, unexpected or wrongly shaped tensor is an
//! error that lists all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};
use tensor::safetensors::NamedTensors;
use tensor::DType;

use crate::config::{ClipTextConfig, ClipTextDims};
use crate::error::{Error, Result};
use crate::model::{ClipTextOutput, ClipTextTransformer};

/// File name of the weights in a transformers model folder.
pub const WEIGHTS_NAME: &str = "model.safetensors";
/// File name of the config in a transformers model folder.
pub const CONFIG_NAME: &str = "config.json";
/// The subfolder of a diffusers pipeline folder that holds its text encoder.
pub const TEXT_ENCODER_SUBFOLDER: &str = "text_encoder";
/// The module path of the text model inside `CLIPTextModel` (transformers 4).
pub const PREFIX: &str = "text_model";

/// The buffers of older checkpoints that are not weights.
const IGNORED: &[&str] = &["text_model.embeddings.position_ids"];

/// The text encoder folder of `dir`: `dir/text_encoder` when it exists (a
/// pipeline folder), else `dir` itself when it has `config.json`.
pub fn resolve_model_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let fail = |reason: &str| Error::NotAModelFolder {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if !dir.is_dir() {
        return Err(fail("no such folder"));
    }
    let sub = dir.join(TEXT_ENCODER_SUBFOLDER);
    if sub.join(CONFIG_NAME).is_file() {
        return Ok(sub);
    }
    if dir.join("model_index.json").is_file() {
        return Err(fail(
            "a pipeline folder (it has model_index.json) without text_encoder/config.json",
        ));
    }
    if dir.join(CONFIG_NAME).is_file() {
        return Ok(dir.to_path_buf());
    }
    Err(fail(
        "neither a text encoder folder (config.json, model.safetensors) nor a pipeline \
         folder with text_encoder/",
    ))
}

/// The transformers-4 name of a state-dict key (`embeddings.x` ->
/// `text_model.embeddings.x`).
pub fn canonical_key(name: &str) -> String {
    if name.starts_with("text_model.") {
        name.to_string()
    } else {
        format!("{PREFIX}.{name}")
    }
}

/// Every tensor of the safetensors file `path`, on the CPU.
fn read_weights(path: &Path) -> Result<NamedTensors> {
    Ok(tensor::safetensors::load(path, Device::Cpu)?)
}

/// A `CLIPTextModel` and the `VarStore` holding its weights.
#[derive(Debug)]
pub struct ClipTextModel {
    pub vs: nn::VarStore,
    pub model: ClipTextTransformer,
    pub config: ClipTextConfig,
}

impl ClipTextModel {
    /// A freshly initialised model (transformers' initialisation) on
    /// `device` in `dtype`.
    pub fn new(config: &ClipTextConfig, device: Device, dtype: DType) -> Result<Self> {
        let dims = config.dims()?;
        Ok(Self::with_dims(config, &dims, device, dtype))
    }

    fn with_dims(
        config: &ClipTextConfig,
        dims: &ClipTextDims,
        device: Device,
        dtype: DType,
    ) -> Self {
        let mut vs = nn::VarStore::new(device);
        let factor = config.initializer_factor.unwrap_or(1.0);
        let model = tch::no_grad(|| ClipTextTransformer::new(&vs.root() / PREFIX, dims, factor));
        vs.set_kind(dtype.kind());
        ClipTextModel {
            vs,
            model,
            config: config.clone(),
        }
    }

    /// Loads a transformers `CLIPTextModel` folder, or the `text_encoder/`
    /// of a pipeline folder, onto `device` in `dtype` (the file's dtype is
    /// converted). The weights are frozen (no gradients), as a text encoder
    /// is used for inference; `vs.unfreeze()` makes them trainable. The
    /// weights file is read first: a config that describes a model more than
    /// twice the size of the file (plus a million weights) is an error
    /// before the model is allocated.
    pub fn load(dir: impl AsRef<Path>, device: Device, dtype: DType) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let config_path = dir.join(CONFIG_NAME);
        let config = ClipTextConfig::from_file(&config_path)?;
        let dims = config.validate(&config_path)?;
        let weights = dir.join(WEIGHTS_NAME);
        if !weights.is_file() {
            let reason = if dir.join("pytorch_model.bin").is_file() {
                "only safetensors weights are read, and this folder has the pickle \
                 pytorch_model.bin (re-save it with safe_serialization=True)"
            } else {
                "no model.safetensors next to config.json"
            };
            return Err(Error::NotAModelFolder {
                path: dir,
                reason: reason.into(),
            });
        }
        // Every weight of the model must be in the file; a model up to twice
        // the file (plus a million weights) is built anyway, so that a config
        // a little off gets the list of mismatched tensors, and a bigger one
        // is refused before anything is allocated.
        let file = read_weights(&weights)?;
        let held: u128 = file.values().map(|t| t.numel() as u128).sum();
        let needed = dims.num_parameters();
        if needed > held.saturating_mul(2).saturating_add(1 << 20) {
            return Err(Error::ConfigExceedsWeights {
                config: config_path,
                weights,
                needed,
                held,
            });
        }
        let mut model = Self::with_dims(&config, &dims, device, dtype);
        model.copy_weights(&weights, file)?;
        model.vs.freeze();
        tracing::info!(
            dir = %dir.display(),
            layers = dims.num_hidden_layers,
            hidden = dims.hidden_size,
            %dtype,
            "loaded CLIP text encoder"
        );
        Ok(model)
    }

    /// Copies the tensors of a safetensors file into the model, converting
    /// dtypes. Every variable must be in the file with its shape, and the
    /// file must hold nothing else (but the `position_ids` buffer).
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.copy_weights(path, read_weights(path)?)
    }

    /// [`ClipTextModel::load_weights`] with the tensors of `path` already read.
    fn copy_weights(&mut self, path: &Path, weights: NamedTensors) -> Result<()> {
        // canonical name -> (name in the file, tensor)
        let mut file: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
        let mut unexpected = Vec::new();
        for (key, t) in weights {
            let name = canonical_key(&key);
            if IGNORED.contains(&name.as_str()) {
                continue;
            }
            if let Some((first, _)) = file.get(&name) {
                unexpected.push(format!("{key} (the same weight as {first})"));
                continue;
            }
            file.insert(name, (key, t));
        }
        let vars = self.vs.variables();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for (name, var) in &vars {
            match file.get(name) {
                None => missing.push(name.clone()),
                Some((_, t)) if t.size() != var.size() => mismatched.push(format!(
                    "{name} (file {:?}, model {:?})",
                    t.size(),
                    var.size()
                )),
                Some(_) => {}
            }
        }
        unexpected.extend(
            file.iter()
                .filter(|(name, _)| !vars.contains_key(*name))
                .map(|(_, (key, _))| key.clone()),
        );
        if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
            missing.sort();
            unexpected.sort();
            mismatched.sort();
            return Err(Error::WeightMismatch {
                path: path.to_path_buf(),
                missing,
                unexpected,
                mismatched,
            });
        }
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vars {
                let (_, src) = &file[&name];
                var.f_copy_(&src.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
            }
            Ok(())
        })?;
        tracing::debug!(path = %path.display(), tensors = file.len(), "loaded CLIP text weights");
        Ok(())
    }

    /// Writes `dir/config.json` and `dir/model.safetensors` (creating
    /// `dir`), each atomically, with transformers-4 key names, so that
    /// `CLIPTextModel.from_pretrained(dir)` loads the model.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let detached: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach()))
            .collect();
        let refs: Vec<(&str, &Tensor)> = detached.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let metadata = tensor::safetensors::Metadata::from([("format".into(), "pt".into())]);
        tensor::safetensors::save(dir.join(WEIGHTS_NAME), &refs, Some(&metadata))?;
        tensor::fs::write_bytes_atomic(&dir.join(CONFIG_NAME), self.config.to_json().as_bytes())?;
        Ok(())
    }

    /// See [`ClipTextTransformer::forward`].
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        self.model.forward(input_ids, attention_mask)
    }

    /// The prompt embeddings diffusers gives the U-Net: the forward pass
    /// then [`ClipTextTransformer::clip_skip`].
    pub fn prompt_embeds(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        clip_skip: Option<usize>,
    ) -> Result<Tensor> {
        let out = self.forward(input_ids, attention_mask)?;
        self.model.clip_skip(&out, clip_skip)
    }

    /// The resolved dimensions of the model.
    pub fn dims(&self) -> &ClipTextDims {
        &self.model.dims
    }

    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Total number of weights.
    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_both_transformers_versions_map_to_one_name() {
        assert_eq!(
            canonical_key("embeddings.token_embedding.weight"),
            "text_model.embeddings.token_embedding.weight"
        );
        assert_eq!(
            canonical_key("text_model.final_layer_norm.bias"),
            "text_model.final_layer_norm.bias"
        );
    }

    #[test]
    fn variables_are_named_as_transformers_names_them() {
        let cfg: ClipTextConfig = serde_json::from_str(
            r#"{"vocab_size": 20, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 7}"#,
        )
        .unwrap();
        let m = ClipTextModel::new(&cfg, Device::Cpu, DType::F32).unwrap();
        let names: Vec<String> = m.vs.variables().into_keys().collect();
        for name in [
            "text_model.embeddings.token_embedding.weight",
            "text_model.embeddings.position_embedding.weight",
            "text_model.encoder.layers.1.self_attn.q_proj.weight",
            "text_model.encoder.layers.0.self_attn.out_proj.bias",
            "text_model.encoder.layers.0.layer_norm1.weight",
            "text_model.encoder.layers.1.mlp.fc2.weight",
            "text_model.encoder.layers.1.layer_norm2.bias",
            "text_model.final_layer_norm.weight",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
        }
        // 2 embeddings + 2 x 16 per layer + 2 final norm
        assert_eq!(names.len(), 2 + 2 * 16 + 2);
        // 20*8 + 7*8 + 2 * (4 * (64 + 8) + 2 * 16 + 128 + 16 + 128 + 8) + 16
        assert_eq!(m.num_parameters(), 160 + 56 + 2 * (288 + 32 + 280) + 16);
        assert_eq!(m.dims().num_parameters(), m.num_parameters() as u128);
    }

    /// A config.json claiming enormous sizes next to a small weights file is
    /// an error before the model is allocated.
    #[test]
    fn a_config_bigger_than_its_weights_is_refused_before_allocating() {
        let cfg: ClipTextConfig = serde_json::from_str(
            r#"{"vocab_size": 20, "hidden_size": 8, "intermediate_size": 16,
                "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 7}"#,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        ClipTextModel::new(&cfg, Device::Cpu, DType::F32)
            .unwrap()
            .save(tmp.path())
            .unwrap();
        ClipTextModel::load(tmp.path(), Device::Cpu, DType::F32).unwrap();
        let edits: [fn(&mut ClipTextConfig); 3] = [
            |c| c.vocab_size = Some(1 << 40),
            |c| c.hidden_size = Some(1 << 30),
            |c| c.num_hidden_layers = Some(1 << 30),
        ];
        for edit in edits {
            let mut huge = cfg.clone();
            edit(&mut huge);
            huge.dims().unwrap();
            std::fs::write(tmp.path().join(CONFIG_NAME), huge.to_json()).unwrap();
            let err = ClipTextModel::load(tmp.path(), Device::Cpu, DType::F32)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("config.json: describes a model of")
                    && err.contains(WEIGHTS_NAME)
                    && err.contains("does not belong"),
                "{err}"
            );
        }
        // A config a little off is built, and the mismatch listed in full.
        let mut longer = cfg.clone();
        longer.max_position_embeddings = Some(21);
        std::fs::write(tmp.path().join(CONFIG_NAME), longer.to_json()).unwrap();
        let err = ClipTextModel::load(tmp.path(), Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wrong shape (1): text_model.embeddings.position_embedding.weight"),
            "{err}"
        );
    }
}
