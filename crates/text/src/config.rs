//! `ClipTextConfig`: the configuration of transformers' `CLIPTextModel`,
//! field for field the keys of its `config.json`, so a transformers config
//! loads as is and ours loads in transformers.
//!
//! A key absent from the file stays absent (`None`) and is written back
//! absent; the defaults of transformers' `CLIPTextConfig` (5.24) are
//! applied where a value is read ([`ClipTextConfig::hidden_size`], ...).
//! Keys this crate does not interpret (`architectures`, `model_type`,
//! `torch_dtype`, `transformers_version`, `_name_or_path`, ...) are kept in
//! [`ClipTextConfig::extra`], so a config round-trips exactly.
//! [`ClipTextConfig::validate`] rejects, with the key and value, what this
//! implementation does not support.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::activations::Activation;
use crate::error::{read_json, Error, Result};

/// The `eos_token_id` of the configs written before transformers PR #24773
/// (Stable Diffusion 1.x and 2.x ship it): the pooled output is then taken
/// at the largest id of each row instead.
pub const LEGACY_EOS_TOKEN_ID: i64 = 2;

/// The configuration of a [`crate::ClipTextModel`]: transformers'
/// `CLIPTextConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<i64>,
    /// Width of the projection of `CLIPTextModelWithProjection` (unused by
    /// `CLIPTextModel`, kept for the round trip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection_dim: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_hidden_layers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_attention_heads: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<i64>,
    /// `quick_gelu` (SD 1.x, OpenAI CLIP) or `gelu` (SD 2.x, OpenCLIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_norm_eps: Option<f64>,
    /// Dropout of the attention weights in training (0 in inference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_range: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initializer_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<i64>,
    /// Where the pooled output is taken: the first position of this id, or
    /// the largest id of the row when it is [`LEGACY_EOS_TOKEN_ID`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<i64>,
    /// Keys this crate does not interpret, kept so a config round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The resolved values of a config, every default applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipTextDims {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub max_position_embeddings: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub eos_token_id: i64,
}

impl ClipTextDims {
    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The number of weights of the model, computed without building it
    /// (saturating): the token and position embeddings, per layer the four
    /// attention projections, two LayerNorms and the two MLP layers, and the
    /// final LayerNorm. [`crate::ClipTextModel::load`] compares it with the
    /// weights a file holds before allocating the model.
    pub fn num_parameters(&self) -> u128 {
        let [v, h, i, l, p] = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.max_position_embeddings,
        ]
        .map(|x| x.max(0) as u128);
        let layer = [
            // q, k, v, out projections with biases
            h.saturating_mul(h).saturating_add(h).saturating_mul(4),
            // layer_norm1, layer_norm2
            h.saturating_mul(4),
            // fc1, fc2
            h.saturating_mul(i).saturating_add(i),
            i.saturating_mul(h).saturating_add(h),
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add);
        [
            v.saturating_mul(h),
            p.saturating_mul(h),
            layer.saturating_mul(l),
            h.saturating_mul(2),
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add)
    }
}

impl ClipTextConfig {
    /// Reads a transformers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        read_json(path.as_ref())
    }

    /// The config as transformers' `config.json` (pretty, keys sorted as
    /// transformers writes them).
    pub fn to_json(&self) -> String {
        let value = serde_json::to_value(self).expect("a ClipTextConfig always serialises");
        // serde_json's map is ordered: sorted keys, as transformers sorts them
        let mut text = serde_json::to_string_pretty(&value).expect("JSON values serialise");
        text.push('\n');
        text
    }

    /// The model of OpenAI's CLIP ViT-L/14 text tower, as Stable Diffusion
    /// 1.x ships it (`text_encoder/config.json` of
    /// stable-diffusion-v1-5: 12 layers of width 768, quick_gelu, the legacy
    /// `eos_token_id` 2).
    pub fn sd15() -> Self {
        ClipTextConfig {
            vocab_size: Some(49408),
            hidden_size: Some(768),
            intermediate_size: Some(3072),
            projection_dim: Some(768),
            num_hidden_layers: Some(12),
            num_attention_heads: Some(12),
            max_position_embeddings: Some(77),
            hidden_act: Some("quick_gelu".into()),
            layer_norm_eps: Some(1e-5),
            attention_dropout: Some(0.0),
            initializer_range: Some(0.02),
            initializer_factor: Some(1.0),
            pad_token_id: Some(1),
            bos_token_id: Some(0),
            eos_token_id: Some(LEGACY_EOS_TOKEN_ID),
            extra: BTreeMap::new(),
        }
    }

    pub fn vocab_size(&self) -> i64 {
        self.vocab_size.unwrap_or(49408)
    }
    pub fn hidden_size(&self) -> i64 {
        self.hidden_size.unwrap_or(512)
    }
    pub fn intermediate_size(&self) -> i64 {
        self.intermediate_size.unwrap_or(2048)
    }
    pub fn num_hidden_layers(&self) -> i64 {
        self.num_hidden_layers.unwrap_or(12)
    }
    pub fn num_attention_heads(&self) -> i64 {
        self.num_attention_heads.unwrap_or(8)
    }
    pub fn max_position_embeddings(&self) -> i64 {
        self.max_position_embeddings.unwrap_or(77)
    }
    pub fn hidden_act(&self) -> &str {
        self.hidden_act.as_deref().unwrap_or("quick_gelu")
    }
    pub fn layer_norm_eps(&self) -> f64 {
        self.layer_norm_eps.unwrap_or(1e-5)
    }
    pub fn eos_token_id(&self) -> i64 {
        self.eos_token_id.unwrap_or(49407)
    }

    /// Checks every value this implementation reads; `path` names the file
    /// in errors. Returns the resolved values.
    pub fn validate(&self, path: &Path) -> Result<ClipTextDims> {
        let unsupported = |key: &str, value: String, reason: &str| Error::Unsupported {
            path: path.to_path_buf(),
            key: key.into(),
            value,
            reason: reason.into(),
        };
        let activation = Activation::from_name(self.hidden_act()).ok_or_else(|| {
            unsupported(
                "hidden_act",
                format!("{:?}", self.hidden_act()),
                Activation::SUPPORTED,
            )
        })?;
        let positive = [
            ("vocab_size", self.vocab_size()),
            ("hidden_size", self.hidden_size()),
            ("intermediate_size", self.intermediate_size()),
            ("num_hidden_layers", self.num_hidden_layers()),
            ("num_attention_heads", self.num_attention_heads()),
            ("max_position_embeddings", self.max_position_embeddings()),
        ];
        for (key, value) in positive {
            if value <= 0 {
                return Err(Error::invalid(
                    path,
                    key,
                    format!("{value}: must be positive"),
                ));
            }
        }
        let (h, n) = (self.hidden_size(), self.num_attention_heads());
        if h % n != 0 {
            return Err(Error::invalid(
                path,
                "hidden_size",
                format!("{h} is not a multiple of num_attention_heads ({n})"),
            ));
        }
        let eps = self.layer_norm_eps();
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid(
                path,
                "layer_norm_eps",
                format!("{eps}: must be positive"),
            ));
        }
        Ok(ClipTextDims {
            vocab_size: self.vocab_size(),
            hidden_size: h,
            intermediate_size: self.intermediate_size(),
            num_hidden_layers: self.num_hidden_layers(),
            num_attention_heads: n,
            max_position_embeddings: self.max_position_embeddings(),
            layer_norm_eps: eps,
            activation,
            eos_token_id: self.eos_token_id(),
        })
    }

    /// [`ClipTextConfig::validate`] for a config that comes from no file.
    pub fn dims(&self) -> Result<ClipTextDims> {
        self.validate(&PathBuf::from("(config)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `text_encoder/config.json` of stable-diffusion-v1-5 (transformers 4.22).
    const SD15: &str = r#"{
  "_name_or_path": "openai/clip-vit-large-patch14",
  "architectures": [
    "CLIPTextModel"
  ],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "dropout": 0.0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "torch_dtype": "float32",
  "transformers_version": "4.22.0.dev0",
  "vocab_size": 49408
}
"#;

    #[test]
    fn a_transformers_config_round_trips_with_unknown_keys() {
        let cfg: ClipTextConfig = serde_json::from_str(SD15).unwrap();
        assert_eq!(cfg.extra["_name_or_path"], "openai/clip-vit-large-patch14");
        assert_eq!(cfg.extra["dropout"], 0.0);
        let back: Value = serde_json::from_str(&cfg.to_json()).unwrap();
        let orig: Value = serde_json::from_str(SD15).unwrap();
        assert_eq!(back, orig);
        // the preset is the same model
        let mut preset = ClipTextConfig::sd15();
        preset.extra = cfg.extra.clone();
        assert_eq!(preset, cfg);
    }

    #[test]
    fn absent_keys_stay_absent_and_take_transformers_defaults() {
        let cfg: ClipTextConfig = serde_json::from_str(r#"{"hidden_size": 64}"#).unwrap();
        assert_eq!(cfg.to_json().trim(), "{\n  \"hidden_size\": 64\n}");
        let d = cfg.dims().unwrap();
        assert_eq!(d.hidden_size, 64);
        assert_eq!(d.num_hidden_layers, 12);
        assert_eq!(d.eos_token_id, 49407);
        assert_eq!(d.activation, Activation::QuickGelu);
        assert_eq!(d.head_dim(), 8);
    }

    #[test]
    fn unsupported_and_inconsistent_values_name_file_and_key() {
        let path = Path::new("te/config.json");
        let cfg: ClipTextConfig = serde_json::from_str(r#"{"hidden_act": "swiglu"}"#).unwrap();
        let err = cfg.validate(path).unwrap_err().to_string();
        assert!(
            err.contains("te/config.json")
                && err.contains("hidden_act")
                && err.contains("swiglu")
                && err.contains("quick_gelu"),
            "{err}"
        );
        let cfg: ClipTextConfig =
            serde_json::from_str(r#"{"hidden_size": 30, "num_attention_heads": 4}"#).unwrap();
        let err = cfg.validate(path).unwrap_err().to_string();
        assert!(
            err.contains("hidden_size") && err.contains("multiple"),
            "{err}"
        );
        let cfg: ClipTextConfig = serde_json::from_str(r#"{"num_hidden_layers": 0}"#).unwrap();
        let err = cfg.validate(path).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.json");
        std::fs::write(&path, r#"{"hidden_size": "768"}"#).unwrap();
        let err = ClipTextConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("field `hidden_size`"),
            "{err}"
        );
        std::fs::write(&path, r#"{"hidden_size": 768,"#).unwrap();
        let err = ClipTextConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("config.json: not valid JSON"), "{err}");
    }
}
