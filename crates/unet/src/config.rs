//! `UNetConfig`: the configuration of a `UNet2DModel`, field for field the
//! keys of diffusers' `config.json`, so a diffusers config loads as is and
//! ours loads in diffusers.
//!
//! Defaults are those of diffusers' `UNet2DModel.__init__` (diffusers
//! 0.42.1): a key missing from a `config.json` means the same thing here as
//! there. Keys this crate does not know (`_class_name`, `_diffusers_version`,
//! `_name_or_path`, ...) are kept in [`UNetConfig::extra`] and written back.
//! [`UNetConfig::validate`] rejects, with the key and value, every option this
//! implementation does not support.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::activations::Activation;
use crate::{Error, Result};

/// `sample_size` of diffusers: one side (square) or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square sample of this side.
    Square(i64),
    /// `[height, width]`.
    Rect([i64; 2]),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn hw(self) -> (i64, i64) {
        match self {
            SampleSize::Square(s) => (s, s),
            SampleSize::Rect([h, w]) => (h, w),
        }
    }
}

/// The configuration of a [`crate::UNet2DModel`]; the keys and defaults of
/// diffusers' `UNet2DModel` `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Height and width of the samples the model was trained on (`null`: unknown).
    pub sample_size: Option<SampleSize>,
    pub in_channels: i64,
    pub out_channels: i64,
    /// Maps the input from [0, 1] to [-1, 1] (`2x - 1`) before the first conv.
    pub center_input_sample: bool,
    /// `"positional"` (sinusoidal) or `"fourier"` (Gaussian Fourier features
    /// of `log(t)`, output divided by `t`).
    pub time_embedding_type: String,
    /// Width of the time embedding; `null`: `4 * block_out_channels[0]`.
    pub time_embedding_dim: Option<i64>,
    pub freq_shift: f64,
    pub flip_sin_to_cos: bool,
    pub down_block_types: Vec<String>,
    /// `"UNetMidBlock2D"` or `null` (no mid block).
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: i64,
    /// `"conv"` or `"resnet"` (only used by `AttnDownBlock2D`, as in diffusers).
    pub downsample_type: String,
    /// `"conv"` or `"resnet"` (only used by `AttnUpBlock2D`, as in diffusers).
    pub upsample_type: String,
    pub dropout: f64,
    pub act_fn: String,
    /// Channels per attention head; `null`: one head over all channels.
    pub attention_head_dim: Option<i64>,
    pub norm_num_groups: i64,
    /// Groups of the mid-block attention's GroupNorm; `null`: `norm_num_groups`
    /// with `resnet_time_scale_shift = "default"`, no norm with `"scale_shift"`.
    pub attn_norm_num_groups: Option<i64>,
    pub norm_eps: f64,
    /// `"default"` (add the time embedding) or `"scale_shift"` (FiLM after norm2).
    pub resnet_time_scale_shift: String,
    /// Attention in the mid block.
    pub add_attention: bool,
    /// `null` (a learned table of `num_class_embeds` rows, when set),
    /// `"timestep"` (labels embedded like timesteps) or `"identity"` (labels
    /// are already embeddings of width `time_embed_dim`).
    pub class_embed_type: Option<String>,
    pub num_class_embeds: Option<i64>,
    pub num_train_timesteps: Option<i64>,
    /// Keys this crate does not interpret (`_class_name`, `_diffusers_version`,
    /// ...), kept so a config round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for UNetConfig {
    /// diffusers 0.42.1 `UNet2DModel.__init__` defaults.
    fn default() -> Self {
        UNetConfig {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: strings(&[
                "DownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
                "AttnDownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2D".into()),
            up_block_types: strings(&[
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "AttnUpBlock2D",
                "UpBlock2D",
            ]),
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: "conv".into(),
            upsample_type: "conv".into(),
            dropout: 0.0,
            act_fn: "silu".into(),
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: "default".into(),
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
            extra: BTreeMap::new(),
        }
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// A down block type this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockType {
    DownBlock2D,
    AttnDownBlock2D,
}

/// An up block type this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockType {
    UpBlock2D,
    AttnUpBlock2D,
}

/// How a ResNet block takes the time embedding (`resnet_time_scale_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeScaleShift {
    /// `h = norm2(conv1(..) + proj(temb))`.
    Default,
    /// `h = norm2(conv1(..)) * (1 + scale) + shift`.
    ScaleShift,
}

impl TimeScaleShift {
    /// The value of `resnet_time_scale_shift`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "default" => Ok(TimeScaleShift::Default),
            "scale_shift" => Ok(TimeScaleShift::ScaleShift),
            v => Err(Error::unsupported(
                "resnet_time_scale_shift",
                v,
                "supported: \"default\", \"scale_shift\"",
            )),
        }
    }
}

/// The timestep featurisation (`time_embedding_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbeddingType {
    Positional,
    Fourier,
}

/// The class conditioning (`class_embed_type` with `num_class_embeds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassEmbedding {
    /// A learned table with this many rows.
    Table(i64),
    /// Class labels featurised like timesteps, then an MLP.
    Timestep,
    /// Class labels are embeddings already.
    Identity,
}

impl ClassEmbedding {
    /// The class conditioning of a config's `class_embed_type` and
    /// `num_class_embeds` (`None`: unconditional), as diffusers reads them:
    /// `class_embed_type` wins over `num_class_embeds`.
    pub fn from_keys(
        class_embed_type: Option<&str>,
        num_class_embeds: Option<i64>,
    ) -> Result<Option<Self>> {
        match (class_embed_type, num_class_embeds) {
            (None, None) => Ok(None),
            (None, Some(n)) if n > 0 => Ok(Some(ClassEmbedding::Table(n))),
            (None, Some(n)) => Err(Error::unsupported(
                "num_class_embeds",
                n,
                "must be positive",
            )),
            (Some("timestep"), _) => Ok(Some(ClassEmbedding::Timestep)),
            (Some("identity"), _) => Ok(Some(ClassEmbedding::Identity)),
            (Some(v), _) => Err(Error::unsupported(
                "class_embed_type",
                v,
                "supported: null (with num_class_embeds), \"timestep\", \"identity\"",
            )),
        }
    }
}

/// The product of `factors` (negative ones count as 0), saturating: the
/// size of a tensor a config describes, however hostile its numbers.
pub(crate) fn product(factors: &[i64]) -> u128 {
    factors
        .iter()
        .fold(1u128, |n, &f| n.saturating_mul(f.max(0) as u128))
}

/// Strips diffusers' `UNetRes` alias prefix (`UNetResDownBlock2D` is `DownBlock2D`).
fn block_name(s: &str) -> &str {
    s.strip_prefix("UNetRes").unwrap_or(s)
}

const SUPPORTED_DOWN: &str = "DownBlock2D, AttnDownBlock2D";
const SUPPORTED_UP: &str = "UpBlock2D, AttnUpBlock2D";

impl UNetConfig {
    /// Reads a diffusers `config.json`, unknown keys kept.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The config as diffusers' `config.json`: `_class_name` is set to
    /// `UNet2DModel` and `_diffusers_version` kept or set to the reference
    /// version, so `UNet2DModel.from_pretrained` accepts it.
    pub fn to_diffusers_json(&self) -> String {
        let mut cfg = self.clone();
        cfg.extra.insert("_class_name".into(), "UNet2DModel".into());
        cfg.extra
            .entry("_diffusers_version".into())
            .or_insert_with(|| crate::DIFFUSERS_VERSION.into());
        let mut text =
            serde_json::to_string_pretty(&cfg).expect("a UNetConfig always serialises to JSON");
        text.push('\n');
        text
    }

    /// Width of the time embedding: `time_embedding_dim` or `4 * block_out_channels[0]`.
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

    /// How many times the model halves the resolution (one per down block but the last).
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// Heads and channels per head of an attention layer over `channels`,
    /// as diffusers computes them: `attention_head_dim` (or `channels` when
    /// null) per head and `channels / attention_head_dim` heads.
    pub fn attention_heads(&self, channels: i64) -> (i64, i64) {
        let dim_head = self.attention_head_dim.unwrap_or(channels);
        (channels / dim_head, dim_head)
    }

    pub fn down_blocks(&self) -> Result<Vec<DownBlockType>> {
        self.down_block_types
            .iter()
            .enumerate()
            .map(|(i, t)| match block_name(t) {
                "DownBlock2D" => Ok(DownBlockType::DownBlock2D),
                "AttnDownBlock2D" => Ok(DownBlockType::AttnDownBlock2D),
                _ => Err(Error::unsupported(
                    format!("down_block_types[{i}]"),
                    t,
                    format!("supported down blocks: {SUPPORTED_DOWN}"),
                )),
            })
            .collect()
    }

    pub fn up_blocks(&self) -> Result<Vec<UpBlockType>> {
        self.up_block_types
            .iter()
            .enumerate()
            .map(|(i, t)| match block_name(t) {
                "UpBlock2D" => Ok(UpBlockType::UpBlock2D),
                "AttnUpBlock2D" => Ok(UpBlockType::AttnUpBlock2D),
                _ => Err(Error::unsupported(
                    format!("up_block_types[{i}]"),
                    t,
                    format!("supported up blocks: {SUPPORTED_UP}"),
                )),
            })
            .collect()
    }

    pub fn time_scale_shift(&self) -> Result<TimeScaleShift> {
        TimeScaleShift::from_name(&self.resnet_time_scale_shift)
    }

    pub fn time_embedding(&self) -> Result<TimeEmbeddingType> {
        match self.time_embedding_type.as_str() {
            "positional" => Ok(TimeEmbeddingType::Positional),
            "fourier" => Ok(TimeEmbeddingType::Fourier),
            v => Err(Error::unsupported(
                "time_embedding_type",
                v,
                "supported: \"positional\", \"fourier\"",
            )),
        }
    }

    /// The class conditioning, `None` for an unconditional model. Follows
    /// diffusers: `class_embed_type` wins over `num_class_embeds`.
    pub fn class_embedding(&self) -> Result<Option<ClassEmbedding>> {
        ClassEmbedding::from_keys(self.class_embed_type.as_deref(), self.num_class_embeds)
    }

    pub fn activation(&self) -> Result<Activation> {
        Activation::from_name(&self.act_fn)
            .ok_or_else(|| Error::unsupported("act_fn", &self.act_fn, Activation::SUPPORTED))
    }

    /// Checks every option against what this implementation supports and
    /// the channel arithmetic diffusers would fail on, naming the key.
    pub fn validate(&self) -> Result<()> {
        let downs = self.down_blocks()?;
        let ups = self.up_blocks()?;
        self.time_scale_shift()?;
        self.time_embedding()?;
        self.class_embedding()?;
        self.activation()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::InvalidConfig("`block_out_channels` is empty".into()));
        }
        if downs.len() != n || ups.len() != n {
            return Err(Error::InvalidConfig(format!(
                "`down_block_types` ({}), `up_block_types` ({}) and `block_out_channels` ({}) \
                 must have the same length",
                downs.len(),
                ups.len(),
                n
            )));
        }
        if let Some(m) = self.mid_block_type.as_deref() {
            if m != "UNetMidBlock2D" {
                return Err(Error::unsupported(
                    "mid_block_type",
                    m,
                    "supported: \"UNetMidBlock2D\", null",
                ));
            }
        }
        for (key, v) in [
            ("downsample_type", &self.downsample_type),
            ("upsample_type", &self.upsample_type),
        ] {
            if v != "conv" && v != "resnet" {
                return Err(Error::unsupported(
                    key,
                    v,
                    "supported: \"conv\", \"resnet\"",
                ));
            }
        }
        for (key, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
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
        if self.norm_eps <= 0.0 {
            return Err(Error::unsupported(
                "norm_eps",
                self.norm_eps,
                "must be positive",
            ));
        }
        if self.mid_block_scale_factor == 0.0 {
            return Err(Error::unsupported(
                "mid_block_scale_factor",
                self.mid_block_scale_factor,
                "must not be 0",
            ));
        }
        if self.time_embedding()? == TimeEmbeddingType::Positional && self.block_out_channels[0] < 2
        {
            return Err(Error::InvalidConfig(
                "`block_out_channels[0]` must be at least 2 for a positional time embedding".into(),
            ));
        }
        if let Some(d) = self.attention_head_dim {
            if d <= 0 {
                return Err(Error::unsupported(
                    "attention_head_dim",
                    d,
                    "must be positive",
                ));
            }
        }
        let g = self.norm_num_groups;
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c <= 0 || c % g != 0 {
                return Err(Error::InvalidConfig(format!(
                    "`block_out_channels[{i}]` = {c} must be a positive multiple of \
                     `norm_num_groups` = {g}"
                )));
            }
        }
        let needs_attention = downs.contains(&DownBlockType::AttnDownBlock2D)
            || ups.contains(&UpBlockType::AttnUpBlock2D)
            || (self.mid_block_type.is_some() && self.add_attention);
        if needs_attention {
            for (i, &c) in self.block_out_channels.iter().enumerate() {
                let (heads, _) = self.attention_heads(c);
                if heads < 1 {
                    return Err(Error::InvalidConfig(format!(
                        "`attention_head_dim` = {:?} is larger than `block_out_channels[{i}]` = {c}: \
                         zero attention heads",
                        self.attention_head_dim
                    )));
                }
            }
            if let (Some(ag), Some(_)) = (self.attn_norm_num_groups, &self.mid_block_type) {
                let c = self.block_out_channels[n - 1];
                if ag <= 0 || c % ag != 0 {
                    return Err(Error::InvalidConfig(format!(
                        "`attn_norm_num_groups` = {ag} must divide the mid block's {c} channels"
                    )));
                }
            }
        }
        // Up blocks concatenate skips of every level: each block's input
        // (prev_output + skip) must also be a multiple of the group count,
        // which holds because both terms are block_out_channels entries.
        if let Some((h, w)) = self.sample_hw() {
            self.check_sample_hw(h, w)
                .map_err(|e| Error::InvalidConfig(format!("`sample_size`: {e}")))?;
        }
        Ok(())
    }

    /// Checks that an `h x w` input survives the down- and upsampling with
    /// matching skip shapes: each level halves with a stride-2 conv and the
    /// way back doubles with nearest-neighbour upsampling, so the sides must
    /// be multiples of `2^(levels - 1)` (28 works with 3 levels: 28, 14, 7).
    pub fn check_sample_hw(&self, h: i64, w: i64) -> std::result::Result<(), String> {
        let levels = self.num_downsamples();
        let Some(f) = u32::try_from(levels)
            .ok()
            .and_then(|n| 1i64.checked_shl(n))
            .filter(|&f| f > 0)
        else {
            return Err(format!(
                "{levels} downsamplings halve any {h}x{w} sample to nothing"
            ));
        };
        if h <= 0 || w <= 0 || h % f != 0 || w % f != 0 {
            return Err(format!(
                "a {h}x{w} sample cannot go through {} downsamplings and back: height and \
                 width must be positive multiples of {f}",
                self.num_downsamples()
            ));
        }
        Ok(())
    }

    /// A lower bound on the number of weights of the model a valid config
    /// describes, computed without building it: the tensors that grow with
    /// each size in the config (`conv_in` and `conv_out`, the time and class
    /// embeddings, and the 3x3 `conv2` and `time_emb_proj` of every ResNet),
    /// in saturating arithmetic. A loader compares it with the weights a
    /// file holds before allocating the model.
    pub fn min_parameters(&self) -> u128 {
        let ch = &self.block_out_channels;
        let c0 = ch.first().copied().unwrap_or(0);
        let temb = self.time_embed_dim();
        let mut total = product(&[self.in_channels, c0, 9])
            .saturating_add(product(&[c0, self.out_channels, 9]))
            .saturating_add(product(&[c0, temb]))
            .saturating_add(product(&[temb, temb]));
        total = total.saturating_add(match self.class_embedding() {
            Ok(Some(ClassEmbedding::Table(rows))) => product(&[rows, temb]),
            Ok(Some(ClassEmbedding::Timestep)) => product(&[c0, temb]),
            _ => 0,
        });
        let resnet = |c: i64| product(&[9, c, c]).saturating_add(product(&[temb, c]));
        // layers_per_block ResNets down, one more up
        let per_level = product(&[self.layers_per_block])
            .saturating_mul(2)
            .saturating_add(1);
        for &c in ch {
            total = total.saturating_add(resnet(c).saturating_mul(per_level));
        }
        if let (Some(_), Some(&c)) = (&self.mid_block_type, ch.last()) {
            total = total.saturating_add(resnet(c).saturating_mul(2));
        }
        total
    }

    /// A named preset: `ddpm-cifar10`, `small-grey-28`, `small-grey-32`, `tiny`.
    pub fn preset(name: &str) -> Result<Self> {
        Ok(match name {
            "ddpm-cifar10" | "ddpm_cifar10" => Self::ddpm_cifar10(),
            "small-grey-28" | "small_grey_28" => Self::small_grey(28),
            "small-grey-32" | "small_grey_32" => Self::small_grey(32),
            "tiny" => Self::tiny(),
            _ => {
                return Err(Error::UnknownPreset {
                    name: name.into(),
                    expected: Self::PRESETS.join(", "),
                })
            }
        })
    }

    /// The names [`UNetConfig::preset`] accepts.
    pub const PRESETS: &'static [&'static str] =
        &["ddpm-cifar10", "small-grey-28", "small-grey-32", "tiny"];

    /// The DDPM CIFAR-10 model (Ho et al. 2020, 35.7 M parameters) as
    /// published in diffusers' format: the `config.json` of the Hugging Face
    /// repository `google/ddpm-cifar10-32` (`_diffusers_version` 0.0.4),
    /// key for key. `attention_head_dim: null` is one head over all 256
    /// channels, as in the original; `downsample_padding: 0` is the
    /// original's asymmetric (0, 1, 0, 1) padding before the stride-2 conv.
    pub fn ddpm_cifar10() -> Self {
        UNetConfig {
            sample_size: Some(SampleSize::Square(32)),
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: "positional".into(),
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            down_block_types: strings(&[
                "DownBlock2D",
                "AttnDownBlock2D",
                "DownBlock2D",
                "DownBlock2D",
            ]),
            up_block_types: strings(&["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
            block_out_channels: vec![128, 256, 256, 256],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            act_fn: "silu".into(),
            attention_head_dim: None,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            ..Self::default()
        }
    }

    /// A small model for the bundled grey digits (and other 1-channel data
    /// at `size x size`, `size` a multiple of 4): three levels at 64, 128
    /// and 128 channels (`size`, `size/2`, `size/4`: 28, 14, 7), attention
    /// with 32-channel heads at the lowest resolution and in the mid block,
    /// about 6 M parameters. The layout follows the three-level
    /// `UNet2DModel` of diffusers' training examples scaled down (Ho et al.
    /// use 2 ResNet blocks per level and attention at 16x16 on CIFAR-10);
    /// time embedding and norms are diffusers' defaults.
    pub fn small_grey(size: i64) -> Self {
        UNetConfig {
            sample_size: Some(SampleSize::Square(size)),
            in_channels: 1,
            out_channels: 1,
            down_block_types: strings(&["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]),
            up_block_types: strings(&["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]),
            block_out_channels: vec![64, 128, 128],
            layers_per_block: 2,
            attention_head_dim: Some(32),
            norm_num_groups: 32,
            ..Self::default()
        }
    }

    /// A tiny model for tests (8x8, one channel, a few thousand parameters)
    /// with every block type: `DownBlock2D`, `AttnDownBlock2D`, the mid
    /// block with attention, `AttnUpBlock2D`, `UpBlock2D`.
    pub fn tiny() -> Self {
        UNetConfig {
            sample_size: Some(SampleSize::Square(8)),
            in_channels: 1,
            out_channels: 1,
            down_block_types: strings(&["DownBlock2D", "AttnDownBlock2D"]),
            up_block_types: strings(&["AttnUpBlock2D", "UpBlock2D"]),
            block_out_channels: vec![8, 16],
            layers_per_block: 1,
            attention_head_dim: Some(8),
            norm_num_groups: 4,
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_has_diffusers_defaults() {
        let cfg: UNetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, UNetConfig::default());
        assert_eq!(cfg.block_out_channels, [224, 448, 672, 896]);
        assert_eq!(cfg.attention_head_dim, Some(8));
        assert_eq!(cfg.time_embed_dim(), 896);
        cfg.validate().unwrap();
    }

    #[test]
    fn a_diffusers_config_round_trips_with_unknown_keys() {
        let text = r#"{
            "_class_name": "UNet2DModel",
            "_diffusers_version": "0.0.4",
            "_name_or_path": "somewhere",
            "act_fn": "silu",
            "attention_head_dim": null,
            "block_out_channels": [128, 256, 256, 256],
            "center_input_sample": false,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
            "downsample_padding": 0,
            "flip_sin_to_cos": false,
            "freq_shift": 1,
            "in_channels": 3,
            "layers_per_block": 2,
            "mid_block_scale_factor": 1,
            "norm_eps": 1e-06,
            "norm_num_groups": 32,
            "out_channels": 3,
            "sample_size": 32,
            "time_embedding_type": "positional",
            "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
        }"#;
        let cfg: UNetConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg.attention_head_dim, None);
        assert_eq!(cfg.extra["_name_or_path"], "somewhere");
        let mut without_extra = cfg.clone();
        without_extra.extra.clear();
        assert_eq!(without_extra, UNetConfig::ddpm_cifar10());

        let json = cfg.to_diffusers_json();
        let back: UNetConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["_class_name"], "UNet2DModel");
        assert_eq!(value["_diffusers_version"], "0.0.4");
        assert_eq!(value["attention_head_dim"], serde_json::Value::Null);
    }

    #[test]
    fn rect_sample_size_round_trips() {
        let cfg: UNetConfig = serde_json::from_str(r#"{"sample_size": [16, 24]}"#).unwrap();
        assert_eq!(cfg.sample_hw(), Some((16, 24)));
        let v: serde_json::Value = serde_json::from_str(&cfg.to_diffusers_json()).unwrap();
        assert_eq!(v["sample_size"], serde_json::json!([16, 24]));
    }

    #[test]
    fn unsupported_options_name_key_and_value() {
        let cases = [
            (
                r#"{"down_block_types": ["DownBlock2D", "SkipDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]}"#,
                "down_block_types[1]",
                "SkipDownBlock2D",
            ),
            (
                r#"{"up_block_types": ["AttnSkipUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}"#,
                "up_block_types[0]",
                "AttnSkipUpBlock2D",
            ),
            (
                r#"{"time_embedding_type": "learned"}"#,
                "time_embedding_type",
                "learned",
            ),
            (
                r#"{"resnet_time_scale_shift": "spatial"}"#,
                "resnet_time_scale_shift",
                "spatial",
            ),
            (
                r#"{"class_embed_type": "projection"}"#,
                "class_embed_type",
                "projection",
            ),
            (r#"{"act_fn": "tanh"}"#, "act_fn", "tanh"),
            (
                r#"{"mid_block_type": "UNetMidBlock2DCrossAttn"}"#,
                "mid_block_type",
                "CrossAttn",
            ),
            (r#"{"downsample_type": "fir"}"#, "downsample_type", "fir"),
        ];
        for (json, key, value) in cases {
            let cfg: UNetConfig = serde_json::from_str(json).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value), "{json}: {err}");
        }
    }

    #[test]
    fn channel_arithmetic_is_checked() {
        let mut cfg = UNetConfig::tiny();
        cfg.norm_num_groups = 3;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("norm_num_groups"));
        let mut cfg = UNetConfig::tiny();
        cfg.attention_head_dim = Some(32);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("zero attention heads"));
        let mut cfg = UNetConfig::tiny();
        cfg.block_out_channels.push(32);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("same length"));
    }

    #[test]
    fn sample_sizes_must_survive_the_round_trip_through_the_levels() {
        let cfg = UNetConfig::small_grey(28);
        cfg.validate().unwrap();
        assert!(cfg.check_sample_hw(28, 28).is_ok());
        assert!(cfg.check_sample_hw(32, 28).is_ok());
        let err = cfg.check_sample_hw(30, 28).unwrap_err();
        assert!(err.contains("multiples of 4"), "{err}");
        assert!(UNetConfig::ddpm_cifar10().check_sample_hw(28, 28).is_err());
        // Hostile files: 70 levels and a huge width are errors, not
        // arithmetic overflows.
        let mut deep = UNetConfig::tiny();
        let n = 70;
        deep.block_out_channels = vec![32; n];
        deep.down_block_types = vec!["DownBlock2D".into(); n];
        deep.up_block_types = vec!["UpBlock2D".into(); n];
        let err = deep.check_sample_hw(i64::MAX, i64::MAX).unwrap_err();
        assert!(err.contains("69 downsamplings"), "{err}");
        let mut wide = UNetConfig::tiny();
        wide.block_out_channels[0] = i64::MAX;
        assert_eq!(wide.time_embed_dim(), i64::MAX);
        assert!(wide.validate().is_err());
    }

    #[test]
    fn presets_are_valid_and_named() {
        for name in UNetConfig::PRESETS {
            UNetConfig::preset(name).unwrap().validate().unwrap();
        }
        let err = UNetConfig::preset("huge").unwrap_err().to_string();
        assert!(err.contains("huge") && err.contains("tiny"), "{err}");
    }
}
