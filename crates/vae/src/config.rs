//! `VaeConfig`: the configuration of an `AutoencoderKL`, field for field the
//! keys of diffusers' `vae/config.json`, so a diffusers config loads as is
//! and ours loads in diffusers.
//!
//! Defaults are those of diffusers' `AutoencoderKL.__init__` (diffusers
//! 0.42.1): a key missing from a `config.json` means the same thing here as
//! there. Keys this crate does not know (`_class_name`, `_diffusers_version`,
//! `_name_or_path`, ...) are kept in [`VaeConfig::extra`] and written back.
//! [`VaeConfig::validate`] rejects, with the key and value, every option this
//! implementation does not support.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use unet::activations::Activation;
pub use unet::config::SampleSize;

use crate::{Error, Result};

/// The configuration of an [`crate::AutoencoderKL`]; the keys and defaults
/// of diffusers' `AutoencoderKL` `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Channels of the images (3 for RGB).
    pub in_channels: i64,
    /// Channels of the decoded images.
    pub out_channels: i64,
    /// One `"DownEncoderBlock2D"` per level.
    pub down_block_types: Vec<String>,
    /// One `"UpDecoderBlock2D"` per level.
    pub up_block_types: Vec<String>,
    /// Channels per level, highest resolution first; every level but the
    /// last halves the resolution, so latents are `2^(levels - 1)` times
    /// smaller than images on each side.
    pub block_out_channels: Vec<i64>,
    /// ResNet blocks per encoder level (the decoder has one more per level).
    pub layers_per_block: i64,
    /// Activation of the ResNet blocks (the output heads always use SiLU).
    pub act_fn: String,
    /// Channels of the latents.
    pub latent_channels: i64,
    pub norm_num_groups: i64,
    /// Height and width of the images the model was trained on.
    pub sample_size: SampleSize,
    /// Latents are `(z - shift_factor) * scaling_factor` for the diffusion
    /// model (SD 1.x/2.x: 0.18215, SDXL: 0.13025).
    pub scaling_factor: f64,
    /// Subtracted before scaling (`null`: 0; SD3: 0.0609, FLUX: 0.1159).
    pub shift_factor: Option<f64>,
    /// Per-channel latent statistics; with both set, latents are
    /// `(z - mean) * scaling_factor / std` (as the SDXL pipelines use them).
    pub latents_mean: Option<Vec<f64>>,
    pub latents_std: Option<Vec<f64>>,
    /// Whether half-precision pipelines should run this VAE in float32.
    pub force_upcast: bool,
    /// A 1x1 conv on the encoder's moments (`quant_conv`).
    pub use_quant_conv: bool,
    /// A 1x1 conv on the latents before the decoder (`post_quant_conv`).
    pub use_post_quant_conv: bool,
    /// Attention in the encoder's and decoder's mid blocks.
    pub mid_block_add_attention: bool,
    /// Keys this crate does not interpret (`_class_name`, `_diffusers_version`,
    /// ...), kept so a config round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for VaeConfig {
    /// diffusers 0.42.1 `AutoencoderKL.__init__` defaults.
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            extra: BTreeMap::new(),
        }
    }
}

const DOWN_BLOCK: &str = "DownEncoderBlock2D";
const UP_BLOCK: &str = "UpDecoderBlock2D";

impl VaeConfig {
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
    /// `AutoencoderKL` and `_diffusers_version` kept or set to the reference
    /// version, so `AutoencoderKL.from_pretrained` accepts it.
    pub fn to_diffusers_json(&self) -> String {
        let mut cfg = self.clone();
        cfg.extra
            .insert("_class_name".into(), "AutoencoderKL".into());
        cfg.extra
            .entry("_diffusers_version".into())
            .or_insert_with(|| unet::DIFFUSERS_VERSION.into());
        let mut text =
            serde_json::to_string_pretty(&cfg).expect("a VaeConfig always serialises to JSON");
        text.push('\n');
        text
    }

    /// The activation of the ResNet blocks (`act_fn`).
    pub fn activation(&self) -> Result<Activation> {
        Activation::from_name(&self.act_fn)
            .ok_or_else(|| Error::unsupported("act_fn", &self.act_fn, Activation::SUPPORTED))
    }

    /// How many times the encoder halves the resolution (one per level but the last).
    pub fn num_downsamples(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// How many times smaller latents are than images, on each side
    /// (`i64::MAX` for 63 downsamplings or more, which no image survives).
    pub fn downscale_factor(&self) -> i64 {
        u32::try_from(self.num_downsamples())
            .ok()
            .and_then(|n| 1i64.checked_shl(n))
            .filter(|&f| f > 0)
            .unwrap_or(i64::MAX)
    }

    /// A lower bound on the number of weights of the model a valid config
    /// describes, computed without building it: the tensors that grow with
    /// each size in the config (the 3x3 `conv2` of every ResNet, the
    /// encoder's and decoder's `conv_in` and `conv_out`, the quant convs),
    /// in saturating arithmetic. [`crate::Vae::load`] compares it with the
    /// weights a file holds before allocating the model.
    pub fn min_parameters(&self) -> u128 {
        let product = |factors: &[i64]| {
            factors
                .iter()
                .fold(1u128, |n, &f| n.saturating_mul(f.max(0) as u128))
        };
        let ch = &self.block_out_channels;
        let (first, last) = (
            ch.first().copied().unwrap_or(0),
            ch.last().copied().unwrap_or(0),
        );
        let z = self.latent_channels;
        // layers_per_block ResNets in the encoder, one more in the decoder
        let per_level = product(&[self.layers_per_block])
            .saturating_mul(2)
            .saturating_add(1);
        let mut total = [
            product(&[self.in_channels, first, 9]),
            product(&[last, 2, z, 9]),
            product(&[z, last, 9]),
            product(&[first, self.out_channels, 9]),
            // two ResNets in each mid block
            product(&[4, 9, last, last]),
            if self.use_quant_conv {
                product(&[2, z, 2, z])
            } else {
                0
            },
            if self.use_post_quant_conv {
                product(&[z, z])
            } else {
                0
            },
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add);
        for &c in ch {
            total = total.saturating_add(product(&[9, c, c]).saturating_mul(per_level));
        }
        total
    }

    /// Checks every option against what this implementation supports and
    /// the channel arithmetic diffusers would fail on, naming the key.
    pub fn validate(&self) -> Result<()> {
        self.activation()?;
        for (key, types, want) in [
            ("down_block_types", &self.down_block_types, DOWN_BLOCK),
            ("up_block_types", &self.up_block_types, UP_BLOCK),
        ] {
            for (i, t) in types.iter().enumerate() {
                if t != want {
                    return Err(Error::unsupported(
                        format!("{key}[{i}]"),
                        t,
                        format!("supported: \"{want}\""),
                    ));
                }
            }
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::InvalidConfig("`block_out_channels` is empty".into()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::InvalidConfig(format!(
                "`down_block_types` ({}), `up_block_types` ({}) and `block_out_channels` ({}) \
                 must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len(),
                n
            )));
        }
        for (key, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if v <= 0 {
                return Err(Error::unsupported(key, v, "must be positive"));
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
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(Error::unsupported(
                "scaling_factor",
                self.scaling_factor,
                "must be a finite, non-zero number",
            ));
        }
        if let Some(s) = self.shift_factor {
            if !s.is_finite() {
                return Err(Error::unsupported("shift_factor", s, "must be finite"));
            }
        }
        let c = self.latent_channels as usize;
        for (key, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if let Some(v) = v {
                if v.len() != c {
                    return Err(Error::unsupported(
                        key,
                        v,
                        format!("expected {c} values (`latent_channels`)"),
                    ));
                }
            }
        }
        if let Some(std) = &self.latents_std {
            if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
                return Err(Error::unsupported(
                    "latents_std",
                    std,
                    "values must be finite and non-zero",
                ));
            }
        }
        Ok(())
    }

    /// Checks that an image of `h x w` goes through the encoder's
    /// downsamplings: both sides positive multiples of
    /// [`VaeConfig::downscale_factor`].
    pub fn check_image_hw(&self, h: i64, w: i64) -> Result<()> {
        let f = self.downscale_factor();
        if h <= 0 || w <= 0 || h % f != 0 || w % f != 0 {
            return Err(Error::Input(format!(
                "a {h}x{w} image cannot be encoded by {} downsamplings: height and width \
                 must be positive multiples of {f}",
                self.num_downsamples()
            )));
        }
        Ok(())
    }

    /// The VAE of Stable Diffusion 1.x and 2.x, as published in the
    /// `vae/config.json` of the Hugging Face repository
    /// `stable-diffusion-v1-5/stable-diffusion-v1-5` (83.7 M weights):
    /// four levels of 128, 256, 512, 512 channels, two ResNets per level,
    /// 4 latent channels, 8x smaller latents, scaling factor 0.18215.
    pub fn stable_diffusion() -> Self {
        VaeConfig {
            down_block_types: vec![DOWN_BLOCK.into(); 4],
            up_block_types: vec![UP_BLOCK.into(); 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: SampleSize::Square(512),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_has_diffusers_defaults() {
        let cfg: VaeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, VaeConfig::default());
        assert_eq!(cfg.scaling_factor, 0.18215);
        assert_eq!(cfg.shift_factor, None);
        assert!(cfg.use_quant_conv && cfg.use_post_quant_conv && cfg.mid_block_add_attention);
        cfg.validate().unwrap();
        VaeConfig::stable_diffusion().validate().unwrap();
        assert_eq!(VaeConfig::stable_diffusion().downscale_factor(), 8);
    }

    #[test]
    fn a_diffusers_config_round_trips_with_unknown_keys() {
        // The vae/config.json of stable-diffusion-v1-5, key for key.
        let text = r#"{
            "_class_name": "AutoencoderKL",
            "_diffusers_version": "0.6.0",
            "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
                                 "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "in_channels": 3,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "out_channels": 3,
            "sample_size": 512,
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D",
                               "UpDecoderBlock2D", "UpDecoderBlock2D"],
            "some_future_key": {"a": [1, 2]}
        }"#;
        let cfg: VaeConfig = serde_json::from_str(text).unwrap();
        assert_eq!(cfg.extra["some_future_key"]["a"][1], 2);
        let mut without_extra = cfg.clone();
        without_extra.extra.clear();
        assert_eq!(without_extra, VaeConfig::stable_diffusion());

        let json = cfg.to_diffusers_json();
        let back: VaeConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["_class_name"], "AutoencoderKL");
        assert_eq!(value["_diffusers_version"], "0.6.0");
        assert_eq!(value["shift_factor"], serde_json::Value::Null);
        assert_eq!(value["scaling_factor"], 0.18215);
        assert_eq!(value["some_future_key"]["a"][0], 1);
    }

    #[test]
    fn shift_factor_and_latent_statistics_round_trip() {
        let cfg: VaeConfig = serde_json::from_str(
            r#"{"shift_factor": 0.0609, "scaling_factor": 1.5305, "sample_size": [64, 96],
                "latents_mean": [0.1, 0.2, 0.3, 0.4], "latents_std": [1, 2, 3, 4]}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.shift_factor, Some(0.0609));
        assert_eq!(cfg.sample_size, SampleSize::Rect([64, 96]));
        let mut back: VaeConfig = serde_json::from_str(&cfg.to_diffusers_json()).unwrap();
        assert_eq!(back.extra["_class_name"], "AutoencoderKL");
        back.extra.clear();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unsupported_options_name_key_and_value() {
        let cases = [
            (
                r#"{"down_block_types": ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
                    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
                    "block_out_channels": [32, 64]}"#,
                "down_block_types[1]",
                "AttnDownEncoderBlock2D",
            ),
            (
                r#"{"up_block_types": ["AttnUpDecoderBlock2D"]}"#,
                "up_block_types[0]",
                "AttnUpDecoderBlock2D",
            ),
            (r#"{"act_fn": "tanh"}"#, "act_fn", "tanh"),
            (r#"{"latent_channels": 0}"#, "latent_channels", "0"),
            (r#"{"scaling_factor": 0}"#, "scaling_factor", "0"),
            (
                r#"{"latents_mean": [0.1, 0.2]}"#,
                "latents_mean",
                "expected 4 values",
            ),
            (r#"{"norm_num_groups": 24}"#, "norm_num_groups", "24"),
            (
                r#"{"block_out_channels": [64, 128]}"#,
                "same length",
                "block_out_channels",
            ),
        ];
        for (json, key, value) in cases {
            let cfg: VaeConfig = serde_json::from_str(json).unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value), "{json}: {err}");
        }
    }

    #[test]
    fn image_sides_must_be_multiples_of_the_downscale_factor() {
        let cfg = VaeConfig::stable_diffusion();
        cfg.check_image_hw(512, 768).unwrap();
        let err = cfg.check_image_hw(500, 512).unwrap_err().to_string();
        assert!(err.contains("multiples of 8"), "{err}");
        // A hostile file's 70 levels are an error, not a shift overflow.
        let n = 70;
        let deep = VaeConfig {
            down_block_types: vec![DOWN_BLOCK.into(); n],
            up_block_types: vec![UP_BLOCK.into(); n],
            block_out_channels: vec![32; n],
            ..VaeConfig::default()
        };
        deep.validate().unwrap();
        assert_eq!(deep.downscale_factor(), i64::MAX);
        let err = deep.check_image_hw(512, 512).unwrap_err().to_string();
        assert!(err.contains("69 downsamplings"), "{err}");
        assert_eq!(crate::Tiling::for_config(&deep).latent_size, 0);
    }
}
