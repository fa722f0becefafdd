//! `UNetConditionConfig`: the configuration of a `UNet2DConditionModel`
//! (the text-conditioned U-Net of Stable Diffusion), the keys and defaults
//! of diffusers' `config.json` (diffusers 0.42.1).
//!
//! Keys this implementation interprets are fields; every other key is kept
//! in [`UNetConditionConfig::extra`] and written back, so a config
//! round-trips. Options diffusers has and this crate does not implement
//! (SDXL's `addition_embed_type: "text_time"`, `encoder_hid_dim`, `time_cond_proj_dim`,
//! dual cross-attention, ...) are accepted only at their defaults:
//! [`UNetConditionConfig::validate`] names the key and value otherwise.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::activations::Activation;
use crate::config::{product, ClassEmbedding, SampleSize, TimeScaleShift};
use crate::{Error, Result};

/// A per-block option of diffusers: one value for every block, or a list
/// with one per down block (up blocks take the list reversed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block for `n` blocks; errors (naming `key`) on a list
    /// of another length.
    pub fn expand(&self, key: &str, n: usize) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::InvalidConfig(format!(
                "`{key}` has {} entries: expected one per down block ({n})",
                v.len()
            ))),
        }
    }
}

/// The configuration of a [`crate::UNet2DConditionModel`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConditionConfig {
    pub sample_size: Option<SampleSize>,
    pub in_channels: i64,
    pub out_channels: i64,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// `DownBlock2D` or `CrossAttnDownBlock2D` each.
    pub down_block_types: Vec<String>,
    /// `"UNetMidBlock2DCrossAttn"` or `null` (no mid block).
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D` each.
    pub up_block_types: Vec<String>,
    /// Cross-attention only (no self-attention) in the transformer blocks.
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: PerBlock<i64>,
    pub downsample_padding: i64,
    pub mid_block_scale_factor: f64,
    pub dropout: f64,
    pub act_fn: String,
    pub norm_num_groups: i64,
    pub norm_eps: f64,
    /// Width of the encoder hidden states (the text embeddings).
    pub cross_attention_dim: PerBlock<i64>,
    pub transformer_layers_per_block: PerBlock<i64>,
    /// The number of attention heads, despite its name (diffusers keeps the
    /// name for compatibility with published configs): each head has
    /// `channels / attention_head_dim` channels.
    pub attention_head_dim: PerBlock<i64>,
    /// Must be null: diffusers rejects it too and reads the heads from
    /// `attention_head_dim`.
    pub num_attention_heads: Option<PerBlock<i64>>,
    /// Linear rather than 1x1-conv `proj_in`/`proj_out` (Stable Diffusion 2).
    pub use_linear_projection: bool,
    /// Attention scores in float32 under fp16/bf16 (Stable Diffusion 2.1).
    pub upcast_attention: bool,
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<i64>,
    pub resnet_time_scale_shift: String,
    pub time_embedding_dim: Option<i64>,
    pub conv_in_kernel: i64,
    pub conv_out_kernel: i64,
    /// `null`: as `only_cross_attention` when that is one value, else false.
    pub mid_block_only_cross_attention: Option<bool>,
    /// `null`, or `"text"`: a pooled text embedding added to the time
    /// embedding (diffusers' `TextTimeEmbedding`: attention pooling of the
    /// encoder hidden states), a global path for the prompt beside
    /// cross-attention. Other values (SDXL's `text_time`, Kandinsky's) are
    /// not implemented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addition_embed_type: Option<String>,
    /// Heads of that attention pooling (`null`: diffusers' default, 64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addition_embed_type_num_heads: Option<i64>,
    /// Keys this crate does not interpret, kept so the config round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for UNetConditionConfig {
    /// diffusers 0.42.1 `UNet2DConditionModel.__init__` defaults (Stable
    /// Diffusion 1.x's U-Net).
    fn default() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        UNetConditionConfig {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: 32,
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(1),
            attention_head_dim: PerBlock::One(8),
            num_attention_heads: None,
            use_linear_projection: false,
            upcast_attention: false,
            class_embed_type: None,
            num_class_embeds: None,
            resnet_time_scale_shift: "default".into(),
            time_embedding_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            mid_block_only_cross_attention: None,
            addition_embed_type: None,
            addition_embed_type_num_heads: None,
            extra: BTreeMap::new(),
        }
    }
}

/// Options of diffusers' `UNet2DConditionModel` this crate supports only at
/// their default value (null unless given).
const DEFAULT_ONLY: &[(&str, Option<&str>)] = &[
    ("encoder_hid_dim", None),
    ("encoder_hid_dim_type", None),
    ("addition_time_embed_dim", None),
    ("time_cond_proj_dim", None),
    ("projection_class_embeddings_input_dim", None),
    ("reverse_transformer_layers_per_block", None),
    ("time_embedding_act_fn", None),
    ("timestep_post_act", None),
    ("cross_attention_norm", None),
    ("dual_cross_attention", Some("false")),
    ("class_embeddings_concat", Some("false")),
    ("resnet_skip_time_act", Some("false")),
    ("resnet_out_scale_factor", Some("1.0")),
    ("time_embedding_type", Some("\"positional\"")),
    ("attention_type", Some("\"default\"")),
];

/// The blocks of one level of the U-Net, as [`UNetConditionConfig::levels`]
/// resolves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Cross-attention transformers after the ResNets (`CrossAttn*Block2D`).
    pub cross_attention: bool,
    /// ResNet blocks (the down block's; the up block has one more).
    pub layers: i64,
    pub transformer_layers: i64,
    /// Attention heads (`attention_head_dim`, see its doc).
    pub heads: i64,
    pub cross_attention_dim: i64,
    pub only_cross_attention: bool,
}

impl UNetConditionConfig {
    /// The Stable Diffusion 1.x U-Net (CompVis/stable-diffusion-v1-4's
    /// `unet/config.json`: diffusers' defaults, `cross_attention_dim` 768,
    /// `sample_size` 64).
    pub fn stable_diffusion_v1() -> Self {
        UNetConditionConfig {
            sample_size: Some(SampleSize::Square(64)),
            cross_attention_dim: PerBlock::One(768),
            ..Default::default()
        }
    }

    /// Reads a diffusers `config.json`, unknown keys kept.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The config as diffusers' `config.json` (`_class_name`
    /// `UNet2DConditionModel`, `_diffusers_version` kept or set).
    pub fn to_diffusers_json(&self) -> String {
        let mut cfg = self.clone();
        cfg.extra
            .insert("_class_name".into(), "UNet2DConditionModel".into());
        cfg.extra
            .entry("_diffusers_version".into())
            .or_insert_with(|| crate::DIFFUSERS_VERSION.into());
        let mut text = serde_json::to_string_pretty(&cfg)
            .expect("a UNetConditionConfig always serialises to JSON");
        text.push('\n');
        text
    }

    /// Width of the time embedding: `time_embedding_dim` or `4 * block_out_channels[0]`
    /// (saturating: a hostile width is caught by [`UNetConditionConfig::validate`]).
    pub fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim.unwrap_or_else(|| {
            self.block_out_channels
                .first()
                .copied()
                .unwrap_or(0)
                .saturating_mul(4)
        })
    }

    /// `(height, width)` of `sample_size`, if set.
    pub fn sample_hw(&self) -> Option<(i64, i64)> {
        self.sample_size.map(SampleSize::hw)
    }

    /// The cross-attention width of the first block: what the encoder
    /// hidden states must have (every block has the same one in the
    /// configs diffusers publishes).
    pub fn encoder_width(&self) -> i64 {
        match &self.cross_attention_dim {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.first().copied().unwrap_or(0),
        }
    }

    pub fn activation(&self) -> Result<Activation> {
        Activation::from_name(&self.act_fn)
            .ok_or_else(|| Error::unsupported("act_fn", &self.act_fn, Activation::SUPPORTED))
    }

    pub fn time_scale_shift(&self) -> Result<TimeScaleShift> {
        TimeScaleShift::from_name(&self.resnet_time_scale_shift)
    }

    /// The class conditioning (`null` with `num_class_embeds`: a table;
    /// `"timestep"`; `"identity"`), `None` without.
    pub fn class_embedding(&self) -> Result<Option<ClassEmbedding>> {
        ClassEmbedding::from_keys(self.class_embed_type.as_deref(), self.num_class_embeds)
    }

    /// The heads of the pooled-text addition to the time embedding
    /// (`addition_embed_type: "text"`), `None` without one.
    pub fn text_time_heads(&self) -> Result<Option<i64>> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text") => {
                let heads = self.addition_embed_type_num_heads.unwrap_or(64);
                let width = self.encoder_width();
                if heads < 1 || width % heads != 0 {
                    return Err(Error::unsupported(
                        "addition_embed_type_num_heads",
                        heads,
                        format!(
                            "must be a positive divisor of the encoder width \
                             (cross_attention_dim = {width})"
                        ),
                    ));
                }
                Ok(Some(heads))
            }
            Some(other) => Err(Error::unsupported(
                "addition_embed_type",
                other,
                "supported: \"text\" (a pooled text embedding), null; SDXL's \"text_time\" \
                 and Kandinsky's image embeddings are not implemented",
            )),
        }
    }

    /// Per down block, as diffusers expands the per-block options; the up
    /// blocks take them in reverse order.
    pub fn levels(&self) -> Result<Vec<Level>> {
        let n = self.block_out_channels.len();
        if self.down_block_types.len() != n {
            return Err(Error::InvalidConfig(format!(
                "{} down block types for {n} block_out_channels: expected {n}",
                self.down_block_types.len()
            )));
        }
        let layers = self.layers_per_block.expand("layers_per_block", n)?;
        let transformer = self
            .transformer_layers_per_block
            .expand("transformer_layers_per_block", n)?;
        let heads = self.attention_head_dim.expand("attention_head_dim", n)?;
        let cross = self.cross_attention_dim.expand("cross_attention_dim", n)?;
        let only = self
            .only_cross_attention
            .expand("only_cross_attention", n)?;
        let mut out = Vec::with_capacity(n);
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let cross_attention = match kind.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                _ => {
                    return Err(Error::unsupported(
                        format!("down_block_types[{i}]"),
                        kind,
                        "supported down blocks: DownBlock2D, CrossAttnDownBlock2D",
                    ))
                }
            };
            out.push(Level {
                cross_attention,
                layers: layers[i],
                transformer_layers: transformer[i],
                heads: heads[i],
                cross_attention_dim: cross[i],
                only_cross_attention: only[i],
            });
        }
        Ok(out)
    }

    /// Whether up block `i` (in up order) has cross-attention.
    pub fn up_cross_attention(&self) -> Result<Vec<bool>> {
        self.up_block_types
            .iter()
            .enumerate()
            .map(|(i, kind)| match kind.as_str() {
                "CrossAttnUpBlock2D" => Ok(true),
                "UpBlock2D" => Ok(false),
                _ => Err(Error::unsupported(
                    format!("up_block_types[{i}]"),
                    kind,
                    "supported up blocks: UpBlock2D, CrossAttnUpBlock2D",
                )),
            })
            .collect()
    }

    /// The mid block's cross-attention-only setting, as diffusers resolves it.
    pub fn mid_only_cross_attention(&self) -> bool {
        match (
            self.mid_block_only_cross_attention,
            &self.only_cross_attention,
        ) {
            (Some(v), _) => v,
            (None, PerBlock::One(v)) => *v,
            (None, PerBlock::Each(_)) => false,
        }
    }

    /// Checks every option against what this implementation supports and
    /// the channel arithmetic diffusers would fail on, naming the key.
    pub fn validate(&self) -> Result<()> {
        for (key, default) in DEFAULT_ONLY {
            let Some(v) = self.extra.get(*key) else {
                continue;
            };
            let at_default = match default {
                None => v.is_null(),
                Some(d) => {
                    let d: Value = serde_json::from_str(d).expect("defaults are JSON");
                    v == &d || (v.as_f64().is_some() && v.as_f64() == d.as_f64())
                }
            };
            if !at_default {
                return Err(Error::Unsupported {
                    key: key.to_string(),
                    value: v.to_string(),
                    reason: "this option of UNet2DConditionModel is not implemented (SDXL, \
                             Kandinsky-style and LCM-conditioned U-Nets are not supported)"
                        .into(),
                });
            }
        }
        if let Some(v) = &self.num_attention_heads {
            return Err(Error::Unsupported {
                key: "num_attention_heads".into(),
                value: serde_json::to_string(v).unwrap_or_default(),
                reason: "must be null: the heads are read from attention_head_dim, as diffusers \
                         does"
                    .into(),
            });
        }
        self.activation()?;
        self.time_scale_shift()?;
        self.class_embedding()?;
        self.text_time_heads()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::InvalidConfig("`block_out_channels` is empty".into()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::InvalidConfig(format!(
                "{} down and {} up block types for {n} block_out_channels: expected {n} each",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => {}
            Some(v) => {
                return Err(Error::unsupported(
                    "mid_block_type",
                    v,
                    "supported: \"UNetMidBlock2DCrossAttn\", null",
                ))
            }
        }
        let levels = self.levels()?;
        self.up_cross_attention()?;
        for k in [self.conv_in_kernel, self.conv_out_kernel] {
            if k < 1 || k % 2 == 0 {
                return Err(Error::unsupported(
                    "conv_in_kernel/conv_out_kernel",
                    k,
                    "an odd kernel size",
                ));
            }
        }
        let g = self.norm_num_groups;
        for (i, (&c, level)) in self.block_out_channels.iter().zip(&levels).enumerate() {
            if c <= 0 || g <= 0 || c % g != 0 {
                return Err(Error::InvalidConfig(format!(
                    "block_out_channels[{i}] = {c} is not a positive multiple of norm_num_groups = {g}"
                )));
            }
            if level.layers < 1 || level.transformer_layers < 1 {
                return Err(Error::InvalidConfig(format!(
                    "block {i}: layers_per_block and transformer_layers_per_block must be >= 1"
                )));
            }
            if level.heads < 1 || c % level.heads != 0 {
                return Err(Error::InvalidConfig(format!(
                    "block {i}: {c} channels do not split into attention_head_dim = {} heads",
                    level.heads
                )));
            }
            if level.cross_attention_dim < 1 {
                return Err(Error::InvalidConfig(format!(
                    "cross_attention_dim of block {i} must be positive"
                )));
            }
        }
        for (key, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("time_embedding_dim", self.time_embed_dim()),
        ] {
            if v <= 0 {
                return Err(Error::unsupported(key, v, "must be positive"));
            }
        }
        if self.downsample_padding < 0 {
            return Err(Error::unsupported(
                "downsample_padding",
                self.downsample_padding,
                "must be 0 or more",
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::unsupported(
                "dropout",
                self.dropout,
                "must be in [0, 1)",
            ));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(Error::unsupported(
                "norm_eps",
                self.norm_eps,
                "must be positive",
            ));
        }
        Ok(())
    }

    /// A lower bound on the number of weights of the model a valid config
    /// describes, computed without building it: the tensors that grow with
    /// each size in the config (`conv_in` and `conv_out`, the time and class
    /// embeddings, the 3x3 `conv2` and `time_emb_proj` of every ResNet, and
    /// the query, key, value and output projections of every
    /// cross-attention), in saturating arithmetic. A loader compares it with
    /// the weights a file holds before allocating the model.
    pub fn min_parameters(&self) -> u128 {
        let ch = &self.block_out_channels;
        let c0 = ch.first().copied().unwrap_or(0);
        let temb = self.time_embed_dim();
        let (k_in, k_out) = (self.conv_in_kernel, self.conv_out_kernel);
        let mut total = product(&[self.in_channels, c0, k_in, k_in])
            .saturating_add(product(&[c0, self.out_channels, k_out, k_out]))
            .saturating_add(product(&[c0, temb]))
            .saturating_add(product(&[temb, temb]));
        total = total.saturating_add(match self.class_embedding() {
            Ok(Some(ClassEmbedding::Table(rows))) => product(&[rows, temb]),
            Ok(Some(ClassEmbedding::Timestep)) => product(&[c0, temb]),
            _ => 0,
        });
        let resnet = |c: i64| product(&[9, c, c]).saturating_add(product(&[temb, c]));
        let transformer = |c: i64, level: &Level| {
            let attn2 =
                product(&[2, level.cross_attention_dim, c]).saturating_add(product(&[2, c, c]));
            attn2.saturating_mul(level.transformer_layers.max(0) as u128)
        };
        let levels = self.levels().unwrap_or_default();
        let up_cross = self.up_cross_attention().unwrap_or_default();
        let n = levels.len();
        for (j, (&c, level)) in ch.iter().zip(&levels).enumerate() {
            let down = level.layers.max(0) as u128;
            let up = down.saturating_add(1);
            total = total.saturating_add(resnet(c).saturating_mul(down.saturating_add(up)));
            if level.cross_attention {
                total = total.saturating_add(transformer(c, level).saturating_mul(down));
            }
            if up_cross.get(n - 1 - j) == Some(&true) {
                total = total.saturating_add(transformer(c, level).saturating_mul(up));
            }
        }
        if let (Some(_), Some(last), Some(&c)) = (&self.mid_block_type, levels.last(), ch.last()) {
            total = total
                .saturating_add(resnet(c).saturating_mul(2))
                .saturating_add(transformer(c, last));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stable Diffusion 2.1's `unet/config.json` (its published keys).
    const SD21: &str = r#"{
      "_class_name": "UNet2DConditionModel",
      "_diffusers_version": "0.10.0.dev0",
      "act_fn": "silu",
      "attention_head_dim": [5, 10, 20, 20],
      "block_out_channels": [320, 640, 1280, 1280],
      "center_input_sample": false,
      "cross_attention_dim": 1024,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1,
      "dual_cross_attention": false,
      "flip_sin_to_cos": true,
      "freq_shift": 0,
      "in_channels": 4,
      "layers_per_block": 2,
      "mid_block_scale_factor": 1,
      "norm_eps": 1e-05,
      "norm_num_groups": 32,
      "num_class_embeds": null,
      "only_cross_attention": false,
      "out_channels": 4,
      "sample_size": 96,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
      "upcast_attention": true,
      "use_linear_projection": true
    }"#;

    #[test]
    fn published_configs_parse_validate_and_round_trip() {
        let cfg: UNetConditionConfig = serde_json::from_str(SD21).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.attention_head_dim, PerBlock::Each(vec![5, 10, 20, 20]));
        assert!(cfg.use_linear_projection && cfg.upcast_attention);
        let levels = cfg.levels().unwrap();
        assert_eq!(levels[2].heads, 20);
        assert!(!levels[3].cross_attention);
        let back: UNetConditionConfig = serde_json::from_str(&cfg.to_diffusers_json()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.extra["dual_cross_attention"], Value::Bool(false));
        UNetConditionConfig::stable_diffusion_v1()
            .validate()
            .unwrap();
    }

    #[test]
    fn unsupported_options_name_key_and_value() {
        for (json, key) in [
            (
                r#"{"addition_embed_type": "text_time"}"#,
                "addition_embed_type",
            ),
            (r#"{"time_cond_proj_dim": 256}"#, "time_cond_proj_dim"),
            (r#"{"encoder_hid_dim": 1024}"#, "encoder_hid_dim"),
            (r#"{"dual_cross_attention": true}"#, "dual_cross_attention"),
            (r#"{"num_attention_heads": 8}"#, "num_attention_heads"),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
            ),
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
            (
                r#"{"down_block_types": ["SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#,
                "down_block_types[0]",
            ),
            (r#"{"in_channels": 0}"#, "in_channels"),
            (r#"{"out_channels": -4}"#, "out_channels"),
            (r#"{"time_embedding_dim": -1}"#, "time_embedding_dim"),
            (r#"{"downsample_padding": -1}"#, "downsample_padding"),
            (r#"{"dropout": 1.5}"#, "dropout"),
            (r#"{"norm_eps": 0}"#, "norm_eps"),
        ] {
            let cfg: UNetConditionConfig = serde_json::from_str(json).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
        // The derived sizes of a hostile file are errors, not panics (an
        // index past the block list, an overflow).
        let cfg: UNetConditionConfig = serde_json::from_str(
            r#"{"block_out_channels": [9223372036854775807], "norm_num_groups": 1,
                "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D"]}"#,
        )
        .unwrap();
        assert_eq!(cfg.time_embed_dim(), i64::MAX);
        let err = cfg.levels().unwrap_err().to_string();
        assert!(err.contains("2 down block types for 1"), "{err}");
        assert!(cfg.validate().is_err());
        assert!(cfg.min_parameters() > 1 << 100);
        // Defaults written out explicitly are fine.
        let cfg: UNetConditionConfig = serde_json::from_str(
            r#"{"addition_embed_type": null, "resnet_out_scale_factor": 1, "attention_type": "default"}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
    }
}
