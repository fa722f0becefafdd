//! The training config: every knob of a run, as TOML, with named presets and
//! command-line overrides. A run writes its fully resolved config to
//! `runs/<name>/config.toml` before step 0; `--config` reads such a file back.

use std::path::{Path, PathBuf};

use data_pipeline::loader::LoaderConfig;
use data_pipeline::preprocess::Preprocess;
use data_pipeline::source::SourceSpec;
use schedule::{BetaSchedule, LossWeighting, PredictionType, SchedulerConfig};
use serde::{Deserialize, Serialize};
use unet::UNetConfig;

pub use tensor::{DeviceSpec, Precision};

use crate::ema::EmaConfig;
use crate::optim::OptimConfig;
use crate::{Error, Result};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Run name: the folder `runs_dir/<name>`. Empty: preset name and a timestamp.
    pub name: String,
    pub runs_dir: PathBuf,
    pub seed: u64,
    pub device: DeviceSpec,
    /// Compute precision of the forward and backward passes: `fp32`, or
    /// `bf16` autocast (f32 master weights, optimiser and EMA; convolutions,
    /// linear layers and attention in bf16; norms, softmax and the loss in
    /// f32). Fast on GPUs and on CPUs with AVX512-BF16 or AMX only.
    pub mixed_precision: Precision,
    /// Run the U-Net in channels-last memory format (same numbers; faster
    /// where the convolution kernels prefer it, e.g. on GPUs with bf16).
    pub channels_last: bool,
    /// Optimiser steps.
    pub steps: u64,
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step.
    pub grad_accum: usize,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub noise: NoiseConfig,
    pub optim: OptimConfig,
    pub ema: EmaConfig,
    pub log: LogConfig,
    pub eval: EvalConfig,
}

/// What the model learns from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub source: SourceSpec,
    pub preprocess: Preprocess,
    /// Stop on an unreadable image instead of skipping it.
    pub strict: bool,
    pub prefetch: usize,
    /// The metadata column that holds an image folder's captions (`text`
    /// when absent, as diffusers' `--caption_column`); naming one requires
    /// captions.
    pub caption_column: Option<String>,
}

/// The U-Net: a preset and the knobs people change most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// `small-grey-28`, `small-grey-32`, `ddpm-cifar10` or `tiny`; sample
    /// size and channels always follow the data.
    pub preset: String,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub attention_head_dim: i64,
    pub norm_num_groups: i64,
    pub dropout: f64,
    /// `default` or `scale_shift`.
    pub resnet_time_scale_shift: String,
    /// Condition on the data's class labels (one extra null label for
    /// classifier-free guidance).
    pub class_conditional: bool,
    /// Probability of replacing a label by the null label while training.
    pub label_dropout: f64,
    /// What the model is conditioned on: `auto` (captions in the data ->
    /// `text`; else `class` when `class_conditional` is set, else `none`),
    /// `text` (captions, with a text encoder trained alongside), `class`
    /// (the data's class labels) or `none` (unconditional).
    pub conditioning: Conditioning,
    /// The models of text conditioning (used when it is `text`).
    pub text: TextConfig,
}

/// What a model is conditioned on ([`ModelConfig::conditioning`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conditioning {
    /// Chosen by the data: captions -> text, else class labels when
    /// `class_conditional`, else none.
    #[default]
    Auto,
    /// Captions, through a CLIP text encoder trained with the U-Net.
    Text,
    /// Class labels (an extra null label for classifier-free guidance).
    Class,
    /// Unconditional.
    None,
}

impl std::fmt::Display for Conditioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conditioning::Auto => "auto",
            Conditioning::Text => "text",
            Conditioning::Class => "class",
            Conditioning::None => "none",
        })
    }
}

/// Text conditioning: a `UNet2DConditionModel` whose cross-attention reads
/// the hidden states of a small `CLIPTextModel` (CLIP's tokenizer and
/// vocabulary, bundled), both trained from scratch. The defaults are sized
/// for a CPU: about 1 M U-Net weights and a 2-layer, 64-wide text encoder
/// (whose 49,408-token embedding table holds most of its 3.3 M weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextConfig {
    /// The U-Net's channels per level (diffusers' `block_out_channels`).
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: i64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D` per level.
    pub down_block_types: Vec<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D` per level.
    pub up_block_types: Vec<String>,
    /// Attention heads of the U-Net's transformer blocks (diffusers'
    /// `attention_head_dim`, which despite its name counts heads).
    pub attention_head_dim: i64,
    pub norm_num_groups: i64,
    /// `"text"`: the prompt, pooled by attention, is also added to the
    /// time embedding (diffusers' `addition_embed_type`), so every ResNet
    /// block sees it as a class-conditional U-Net sees its label; `null`:
    /// cross-attention only, as Stable Diffusion.
    pub addition_embed_type: Option<String>,
    /// Heads of that pooling (diffusers' `addition_embed_type_num_heads`).
    pub addition_embed_type_num_heads: i64,
    /// The text encoder's width: the U-Net's `cross_attention_dim`.
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// Tokens per caption (at most 77, CLIP's; shorter is faster, and the
    /// run's tokenizer pads and cuts to it).
    pub max_position_embeddings: i64,
    /// Train the text encoder with the U-Net (false: it keeps its initial
    /// weights, bit for bit).
    pub train_text_encoder: bool,
    /// Probability of training on the empty caption instead of the image's
    /// (diffusers' `proportion_empty_prompts`), for classifier-free guidance.
    pub proportion_empty_prompts: f64,
    /// The prompts of the sample grids, one column each (empty: the first
    /// few distinct captions of the data).
    pub sample_prompts: Vec<String>,
    /// Latent mode: train in the latent space of this `AutoencoderKL` (a
    /// `vae/` folder, or a pipeline or run folder holding one, e.g. from
    /// `lmzh train-vae`), kept frozen. The U-Net sees `vae.encode(x)
    /// .latent_dist.sample() * scaling_factor`, the run folder gets a copy
    /// of the VAE and is a `StableDiffusionPipeline`. null: pixel space.
    pub vae: Option<PathBuf>,
    /// Fine-tuning: start from the models of this Stable-Diffusion-style
    /// pipeline folder (`unet/`, `text_encoder/`, `tokenizer/`, `scheduler/`,
    /// and `vae/` for latent mode) instead of fresh ones, as diffusers'
    /// `train_text_to_image.py --pretrained_model_name_or_path` does: the
    /// VAE frozen, the text encoder frozen unless `train_text_encoder`, the
    /// forward process (betas, prediction type) read from its scheduler. The
    /// U-Net and text-encoder shape settings above are then unused.
    pub init_from: Option<PathBuf>,
}

impl Default for TextConfig {
    fn default() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        TextConfig {
            block_out_channels: vec![32, 64],
            layers_per_block: 1,
            down_block_types: strings(&["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]),
            up_block_types: strings(&["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
            attention_head_dim: 4,
            norm_num_groups: 8,
            addition_embed_type: None,
            addition_embed_type_num_heads: 4,
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            max_position_embeddings: 77,
            train_text_encoder: true,
            proportion_empty_prompts: 0.1,
            sample_prompts: Vec::new(),
            vae: None,
            init_from: None,
        }
    }
}

/// The captioned folder of the `captions-tiny` preset (written by
/// `cargo run -p trainer --example make_captions_tiny`).
const CAPTIONS_TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/captions-tiny");

/// Optimiser steps of the `captioned-digits` preset (batch 32): 80,000
/// canvases, 16 epochs, chosen to finish within 30 minutes on a 2-core CPU
/// (its U-Net measured at about 0.7 times the `default` preset's images a
/// second; see README).
const CAPTIONED_DIGITS_STEPS: u64 = 2500;

/// CLIP's tokenizer pads and cuts captions to this many tokens.
pub const CLIP_MAX_TOKENS: i64 = 77;

impl TextConfig {
    /// The `UNet2DConditionModel` for images of `channels` x `size` x
    /// `size` (pixel space: the U-Net sees the images themselves), with
    /// `dropout` (the model's).
    pub fn unet_config(
        &self,
        channels: i64,
        size: i64,
        dropout: f64,
    ) -> Result<unet::UNetConditionConfig> {
        use unet::condition_config::PerBlock;
        let u = unet::UNetConditionConfig {
            sample_size: Some(unet::config::SampleSize::Square(size)),
            in_channels: channels,
            out_channels: channels,
            down_block_types: self.down_block_types.clone(),
            up_block_types: self.up_block_types.clone(),
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: PerBlock::One(self.layers_per_block),
            dropout,
            norm_num_groups: self.norm_num_groups,
            cross_attention_dim: PerBlock::One(self.hidden_size),
            attention_head_dim: PerBlock::One(self.attention_head_dim),
            addition_embed_type: self.addition_embed_type.clone(),
            addition_embed_type_num_heads: self
                .addition_embed_type
                .is_some()
                .then_some(self.addition_embed_type_num_heads),
            ..unet::UNetConditionConfig::default()
        };
        u.validate().map_err(|e| Error::Setting {
            key: "model.text".into(),
            reason: e.to_string(),
        })?;
        Ok(u)
    }

    /// The `CLIPTextModel` (transformers' `CLIPTextConfig` keys; CLIP's
    /// vocabulary and special tokens, quick_gelu as CLIP).
    pub fn text_encoder_config(&self) -> Result<text::ClipTextConfig> {
        let c = text::ClipTextConfig {
            vocab_size: Some(49408),
            hidden_size: Some(self.hidden_size),
            intermediate_size: Some(self.intermediate_size),
            projection_dim: Some(self.hidden_size),
            num_hidden_layers: Some(self.num_hidden_layers),
            num_attention_heads: Some(self.num_attention_heads),
            max_position_embeddings: Some(self.max_position_embeddings),
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
            ..text::ClipTextConfig::sd15()
        };
        c.dims().map_err(|e| Error::Setting {
            key: "model.text".into(),
            reason: e.to_string(),
        })?;
        Ok(c)
    }

    /// The text models of the `captioned-digits` preset: a U-Net of (32,
    /// 64, 64) channels at 32, 16 and 8 pixels with cross-attention at 8 x 8
    /// and in the middle block only (a left/right layout is decided there,
    /// four columns a side; attention at 16 x 16 as well measured 2.3 times
    /// slower per step on a 2-core CPU, so fewer steps in the same time),
    /// and the default 2-layer, 64-wide text encoder reading 16 tokens (the
    /// longest caption is 14 with its start and end tokens). Sample prompts:
    /// four seen pairs and four held-out ones, (1, 3), (4, 2), (6, 8) and
    /// (9, 7), plainly worded.
    pub fn captioned_digits() -> Self {
        let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        TextConfig {
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 1,
            down_block_types: strings(&["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"]),
            up_block_types: strings(&["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]),
            attention_head_dim: 4,
            norm_num_groups: 8,
            max_position_embeddings: 16,
            proportion_empty_prompts: 0.1,
            sample_prompts: strings(&[
                "a 0 to the left of a 1",
                "a 3 to the left of a 4",
                "a 6 to the left of a 7",
                "an 8 to the left of a 9",
                "a 1 to the left of a 3",
                "a 4 to the left of a 2",
                "a 6 to the left of an 8",
                "a 9 to the left of a 7",
            ]),
            ..TextConfig::default()
        }
    }

    /// Checks what the model constructors do not.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: String| {
            Err(Error::Setting {
                key: format!("model.text.{key}"),
                reason,
            })
        };
        if !(0.0..=1.0).contains(&self.proportion_empty_prompts) {
            return bad(
                "proportion_empty_prompts",
                format!("{}: must lie in [0, 1]", self.proportion_empty_prompts),
            );
        }
        if !(2..=CLIP_MAX_TOKENS).contains(&self.max_position_embeddings) {
            return bad(
                "max_position_embeddings",
                format!(
                    "{}: must lie in [2, {CLIP_MAX_TOKENS}] (CLIP's tokenizer pads captions to                      at most {CLIP_MAX_TOKENS} tokens)",
                    self.max_position_embeddings
                ),
            );
        }
        Ok(())
    }
}

/// The forward process and the objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoiseConfig {
    pub num_train_timesteps: usize,
    pub beta_schedule: BetaSchedule,
    pub beta_start: f64,
    pub beta_end: f64,
    pub prediction_type: PredictionType,
    pub loss_weighting: LossWeighting,
    /// Offset noise strength (0 disables).
    pub offset_noise: f64,
}

/// Logging, samples and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Write a line to metrics.jsonl every this many steps.
    pub every: u64,
    /// Sample a grid from fixed noise every this many steps (0: only at the end).
    pub sample_every: u64,
    pub sample_images: usize,
    pub sampler: String,
    pub sample_steps: usize,
    pub guidance_scale: f64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Stop after this many consecutive non-finite steps.
    pub max_bad_steps: usize,
}

/// In-training evaluation: FD/KID of samples from fixed noise against a
/// reference set, on the features of a classifier (see the `eval` crate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps and at the end (0: never).
    pub every: u64,
    /// Samples per evaluation (more: less noisy FD, slower).
    pub num_images: usize,
    /// A fast solver and few steps: the numbers are for comparing steps of
    /// one run.
    pub sampler: String,
    pub steps: usize,
    pub guidance_scale: f64,
    /// The real data: a source spec, or `auto` (the held-out split of a
    /// benchmark set, else the training data itself).
    pub reference: String,
    /// `auto` (the bundled net for the reference data), `fmnist`, `digits`,
    /// or a feature net file from `lmzh eval train-features`.
    pub feature_net: String,
    /// Use at most this many reference images (0: all).
    pub reference_limit: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 0,
            num_images: 500,
            sampler: "dpm++2m".into(),
            steps: 10,
            guidance_scale: 2.0,
            reference: "auto".into(),
            feature_net: "auto".into(),
            reference_limit: 0,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::preset("default").expect("the default preset exists")
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: SourceSpec::Digits,
            preprocess: Preprocess::default(),
            strict: false,
            prefetch: 4,
            caption_column: None,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::from_preset("small-grey-28").expect("preset exists")
    }
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction_type: PredictionType::Epsilon,
            loss_weighting: LossWeighting::Uniform,
            offset_noise: 0.0,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every: 10,
            sample_every: 250,
            sample_images: 40,
            sampler: "dpm++2m".into(),
            sample_steps: 25,
            guidance_scale: 2.0,
            checkpoint_every: 250,
            keep_checkpoints: 2,
            max_bad_steps: 10,
        }
    }
}

impl ModelConfig {
    /// The knobs of a U-Net preset.
    pub fn from_preset(preset: &str) -> Result<Self> {
        let u = UNetConfig::preset(preset)?;
        Ok(ModelConfig {
            preset: preset.to_string(),
            block_out_channels: u.block_out_channels,
            layers_per_block: u.layers_per_block,
            down_block_types: u.down_block_types,
            up_block_types: u.up_block_types,
            attention_head_dim: u.attention_head_dim.unwrap_or(8),
            norm_num_groups: u.norm_num_groups,
            dropout: u.dropout,
            resnet_time_scale_shift: u.resnet_time_scale_shift,
            class_conditional: false,
            label_dropout: 0.1,
            conditioning: Conditioning::Auto,
            text: TextConfig::default(),
        })
    }

    /// The full U-Net config for images of `channels` x `size` x `size` and
    /// `num_classes` classes (used when class-conditional).
    pub fn unet_config(&self, channels: i64, size: i64, num_classes: usize) -> Result<UNetConfig> {
        let mut u = UNetConfig::preset(&self.preset)?;
        u.sample_size = Some(unet::config::SampleSize::Square(size));
        u.in_channels = channels;
        u.out_channels = channels;
        u.block_out_channels = self.block_out_channels.clone();
        u.layers_per_block = self.layers_per_block;
        u.down_block_types = self.down_block_types.clone();
        u.up_block_types = self.up_block_types.clone();
        u.attention_head_dim = Some(self.attention_head_dim);
        u.norm_num_groups = self.norm_num_groups;
        u.dropout = self.dropout;
        u.resnet_time_scale_shift = self.resnet_time_scale_shift.clone();
        if self.class_conditional {
            if num_classes == 0 {
                return Err(Error::Setting {
                    key: "model.class_conditional".into(),
                    reason: "the data source has no class labels; set it to false".into(),
                });
            }
            u.num_class_embeds = Some(num_classes as i64 + 1);
        }
        u.validate()?;
        Ok(u)
    }
}

impl NoiseConfig {
    /// The scheduler config (diffusers' `DDPMScheduler` keys) of this run.
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            num_train_timesteps: Some(self.num_train_timesteps),
            beta_schedule: Some(self.beta_schedule),
            beta_start: Some(self.beta_start),
            beta_end: Some(self.beta_end),
            prediction_type: Some(self.prediction_type),
            ..SchedulerConfig::ddpm()
        }
    }
}

impl NoiseConfig {
    /// The forward process of a pipeline's `scheduler_config.json`, read as
    /// diffusers' training scripts read it (`DDPMScheduler.from_pretrained`:
    /// the betas and prediction type, `DDPMScheduler`'s defaults for keys
    /// the file lacks); the loss weighting and offset noise are kept.
    pub fn with_scheduler(&self, s: &SchedulerConfig) -> Result<NoiseConfig> {
        if let Some(Some(_)) = &s.trained_betas {
            return Err(Error::Setting {
                key: "model.text.init_from".into(),
                reason: "the pipeline's scheduler gives trained_betas, which training does not \
                         take (use a beta_schedule)"
                    .into(),
            });
        }
        let d = SchedulerConfig::ddpm();
        let pick = |a: Option<f64>, b: Option<f64>| a.or(b).unwrap_or_default();
        Ok(NoiseConfig {
            num_train_timesteps: s
                .num_train_timesteps
                .or(d.num_train_timesteps)
                .unwrap_or(1000),
            beta_schedule: s
                .beta_schedule
                .or(d.beta_schedule)
                .unwrap_or(BetaSchedule::Linear),
            beta_start: pick(s.beta_start, d.beta_start),
            beta_end: pick(s.beta_end, d.beta_end),
            prediction_type: s
                .prediction_type
                .or(d.prediction_type)
                .unwrap_or(PredictionType::Epsilon),
            ..self.clone()
        })
    }
}

impl TrainConfig {
    /// The names [`TrainConfig::preset`] accepts.
    pub const PRESETS: &'static [&'static str] = &[
        "default",
        "fashion-mnist",
        "cifar10",
        "captions-tiny",
        "captioned-digits",
    ];

    /// A named preset.
    ///
    /// - `default`: the bundled digits, class-conditional, sized to train on a
    ///   2-core laptop CPU in about ten minutes.
    /// - `fashion-mnist`: full Fashion-MNIST (`cargo xtask data fashion-mnist`).
    /// - `cifar10`: CIFAR-10 with the DDPM paper's model (Ho et al. 2020:
    ///   lr 2e-4, batch 128, warm-up 5000, dropout 0.1, random flips); a GPU job.
    /// - `captions-tiny`: text to image in pixel space on the bundled
    ///   captioned shapes (`assets/captions-tiny`: "a red circle", ...), with
    ///   a small CLIP text encoder trained from scratch alongside the U-Net;
    ///   a few minutes on a CPU.
    /// - `captioned-digits`: text to image in pixel space on the bundled
    ///   `captioned-digits` canvases (two digits side by side, 32 x 32 grey,
    ///   "a large 6 to the left of a small thick 4"), without flips (a
    ///   mirrored canvas contradicts its caption); sized to finish within
    ///   half an hour on a 2-core CPU. `lmzh eval prompts --model RUN`
    ///   scores how well it follows prompts for seen and held-out pairs.
    pub fn preset(name: &str) -> Result<Self> {
        let base = TrainConfig {
            name: String::new(),
            runs_dir: PathBuf::from("runs"),
            seed: 0,
            device: DeviceSpec::Auto,
            mixed_precision: Precision::Fp32,
            channels_last: false,
            // Chosen by experiment on a 2-core CPU (about 50 img/s): batch 32
            // gives twice the updates of 64 in the same time, and v-prediction
            // gives clean backgrounds far earlier than epsilon (see README).
            steps: 1000,
            batch_size: 32,
            grad_accum: 1,
            data: DataConfig::default(),
            // 1.1 M parameters: small-grey-28's layout at a quarter of its width.
            model: ModelConfig {
                class_conditional: true,
                block_out_channels: vec![32, 64, 64],
                layers_per_block: 1,
                attention_head_dim: 32,
                norm_num_groups: 8,
                ..ModelConfig::from_preset("small-grey-28")?
            },
            noise: NoiseConfig {
                prediction_type: PredictionType::VPrediction,
                ..NoiseConfig::default()
            },
            optim: OptimConfig {
                learning_rate: 2e-3,
                warmup_steps: 100,
                ..OptimConfig::default()
            },
            ema: EmaConfig::default(),
            log: LogConfig::default(),
            // FD/KID on the bundled digits net at steps 500 and 1000: 300
            // samples from 10 DPM-Solver++ steps, about half a minute each.
            eval: EvalConfig {
                every: 500,
                num_images: 300,
                ..EvalConfig::default()
            },
        };
        Ok(match name {
            "default" => base,
            "fashion-mnist" => TrainConfig {
                steps: 20_000,
                batch_size: 128,
                data: DataConfig {
                    source: SourceSpec::FashionMnist(data_pipeline::source::Split::Train),
                    ..DataConfig::default()
                },
                // the full small-grey-28 U-Net (6.5 M parameters): a GPU-sized job
                model: ModelConfig {
                    class_conditional: true,
                    ..ModelConfig::from_preset("small-grey-28")?
                },
                optim: OptimConfig {
                    learning_rate: 1e-3,
                    warmup_steps: 500,
                    ..OptimConfig::default()
                },
                ema: EmaConfig {
                    max_decay: 0.9999,
                    ..EmaConfig::default()
                },
                log: LogConfig {
                    sample_every: 1000,
                    checkpoint_every: 1000,
                    ..LogConfig::default()
                },
                eval: EvalConfig {
                    every: 1000,
                    num_images: 1000,
                    ..EvalConfig::default()
                },
                ..base
            },
            "cifar10" => TrainConfig {
                steps: 800_000,
                batch_size: 128,
                data: DataConfig {
                    source: SourceSpec::Cifar10 {
                        dir: None,
                        split: data_pipeline::source::Split::Train,
                    },
                    preprocess: Preprocess {
                        random_flip: true,
                        ..Preprocess::default()
                    },
                    ..DataConfig::default()
                },
                model: ModelConfig {
                    dropout: 0.1,
                    class_conditional: false,
                    ..ModelConfig::from_preset("ddpm-cifar10")?
                },
                noise: NoiseConfig {
                    beta_schedule: BetaSchedule::Linear,
                    ..NoiseConfig::default()
                },
                optim: OptimConfig {
                    learning_rate: 2e-4,
                    warmup_steps: 5000,
                    weight_decay: 0.0,
                    decay: crate::optim::Decay::Constant,
                    ..OptimConfig::default()
                },
                ema: EmaConfig {
                    max_decay: 0.9999,
                    ..EmaConfig::default()
                },
                log: LogConfig {
                    sample_every: 10_000,
                    checkpoint_every: 10_000,
                    guidance_scale: 1.0,
                    ..LogConfig::default()
                },
                // No bundled feature net fits CIFAR-10: train one with
                // `lmzh eval train-features --data cifar10` and set
                // eval.feature_net and eval.every to evaluate.
                eval: EvalConfig::default(),
                ..base
            },
            "captions-tiny" => TrainConfig {
                steps: 1500,
                batch_size: 32,
                data: DataConfig {
                    source: SourceSpec::Folder(PathBuf::from(CAPTIONS_TINY)),
                    preprocess: Preprocess {
                        resolution: Some(16),
                        channels: Some(3),
                        ..Preprocess::default()
                    },
                    ..DataConfig::default()
                },
                model: ModelConfig {
                    class_conditional: false,
                    conditioning: Conditioning::Text,
                    ..ModelConfig::from_preset("small-grey-28")?
                },
                log: LogConfig {
                    sample_images: 24,
                    guidance_scale: 3.0,
                    ..LogConfig::default()
                },
                // No feature net fits these pictures.
                eval: EvalConfig::default(),
                ..base
            },
            "captioned-digits" => TrainConfig {
                steps: CAPTIONED_DIGITS_STEPS,
                batch_size: 32,
                data: DataConfig {
                    source: SourceSpec::CaptionedDigits(data_pipeline::source::Split::Train),
                    preprocess: Preprocess {
                        resolution: Some(32),
                        channels: Some(1),
                        // A flip swaps the digits' sides and mirrors them.
                        random_flip: false,
                        ..Preprocess::default()
                    },
                    ..DataConfig::default()
                },
                model: ModelConfig {
                    class_conditional: false,
                    conditioning: Conditioning::Text,
                    text: TextConfig::captioned_digits(),
                    ..ModelConfig::from_preset("small-grey-32")?
                },
                log: LogConfig {
                    sample_every: 500,
                    // Two rows of the eight prompts.
                    sample_images: 16,
                    guidance_scale: 3.0,
                    checkpoint_every: 500,
                    ..LogConfig::default()
                },
                // In-training FD is not computed for text runs; prompt
                // following is `lmzh eval prompts` on the finished run.
                eval: EvalConfig::default(),
                ..base
            },
            other => {
                return Err(Error::Setting {
                    key: "preset".into(),
                    reason: format!(
                        "unknown preset {other:?}; expected one of {}",
                        Self::PRESETS.join(", ")
                    ),
                })
            }
        })
    }

    /// Reads a TOML config file; missing keys take the `default` preset's values.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("every field is representable in TOML")
    }

    /// Applies one `key=value` override, e.g. `optim.learning_rate=1e-3` or
    /// `data.source="fashion-mnist"` (the value is TOML; bare words are strings).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| Error::Setting {
            key: assignment.to_string(),
            reason: "expected KEY=VALUE, e.g. optim.learning_rate=1e-3".into(),
        })?;
        let (key, value) = (key.trim(), value.trim());
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let mut doc = toml::Value::try_from(&*self).map_err(|e| Error::Setting {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let no_such = || Error::Setting {
            key: key.to_string(),
            reason: "no such setting".into(),
        };
        let parts: Vec<&str> = key.split('.').collect();
        let (leaf, path) = parts.split_last().ok_or_else(no_such)?;
        let mut table = doc.as_table_mut().ok_or_else(no_such)?;
        for part in path {
            table = table
                .get_mut(*part)
                .and_then(toml::Value::as_table_mut)
                .ok_or_else(no_such)?;
        }
        // An unset optional key is absent from the document: insert it, and let
        // deserialisation (which denies unknown fields) reject a typo.
        let known = table.contains_key(*leaf);
        table.insert((*leaf).to_string(), parsed);
        *self = doc
            .try_into()
            .map_err(|e: toml::de::Error| Error::Setting {
                key: key.to_string(),
                reason: if known {
                    e.message().to_string()
                } else {
                    "no such setting".into()
                },
            })?;
        Ok(())
    }

    /// Checks the settings serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: &str| {
            Err(Error::Setting {
                key: key.into(),
                reason: reason.into(),
            })
        };
        if self.steps == 0 {
            return bad("steps", "must be at least 1");
        }
        if self.mixed_precision == Precision::Fp16 {
            return bad(
                "mixed_precision",
                "fp16 training needs loss scaling, which this trainer does not do: use bf16 \
                 (same speed on hardware that has both, and f32's range)",
            );
        }
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size/grad_accum", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.model.label_dropout) {
            return bad("model.label_dropout", "must lie in [0, 1)");
        }
        if self.noise.num_train_timesteps < 2 {
            return bad("noise.num_train_timesteps", "must be at least 2");
        }
        if self.eval.every > 0 && self.eval.num_images < 2 {
            return bad(
                "eval.num_images",
                "must be at least 2 (a covariance needs two samples)",
            );
        }
        if self.model.conditioning != Conditioning::Class
            && self.model.conditioning != Conditioning::None
        {
            self.model.text.validate()?;
        }
        self.optim.validate()?;
        self.data.preprocess.validate()?;
        Ok(())
    }

    /// Loader settings for this run.
    pub fn loader(&self) -> LoaderConfig {
        LoaderConfig {
            batch_size: self.batch_size,
            seed: tensor::seed::derive_seed(self.seed, "data"),
            shuffle: true,
            drop_last: true,
            prefetch: self.data.prefetch,
            caption_dropout: if self.model.conditioning == Conditioning::Text {
                self.model.text.proportion_empty_prompts
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_toml() {
        for name in TrainConfig::PRESETS {
            let c = TrainConfig::preset(name).unwrap();
            c.validate().unwrap();
            let back: TrainConfig = toml::from_str(&c.to_toml()).unwrap();
            assert_eq!(back, c, "{name}");
        }
    }

    #[test]
    fn overrides_reach_nested_keys_and_name_bad_ones() {
        let mut c = TrainConfig::default();
        c.set("optim.learning_rate=3e-4").unwrap();
        c.set("data.source=fashion-mnist:test").unwrap();
        c.set("steps = 7").unwrap();
        c.set("data.preprocess.resolution=8").unwrap();
        assert_eq!(c.data.preprocess.resolution, Some(8));
        assert_eq!(c.optim.learning_rate, 3e-4);
        assert_eq!(c.data.source.to_string(), "fashion-mnist:test");
        assert_eq!(c.steps, 7);
        let err = c.set("optim.learnig_rate=1").unwrap_err().to_string();
        assert!(
            err.contains("optim.learnig_rate") && err.contains("no such setting"),
            "{err}"
        );
        let err = c.set("steps=many").unwrap_err().to_string();
        assert!(err.contains("steps"), "{err}");
    }

    #[test]
    fn a_partial_file_fills_in_defaults_and_typos_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.toml");
        std::fs::write(&p, "steps = 10\n[optim]\nlearning_rate = 0.01\n").unwrap();
        let c = TrainConfig::load(&p).unwrap();
        assert_eq!(
            (c.steps, c.optim.learning_rate, c.batch_size),
            (10, 0.01, TrainConfig::default().batch_size)
        );
        std::fs::write(&p, "stpes = 10\n").unwrap();
        let err = TrainConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("train.toml") && err.contains("stpes"), "{err}");
    }

    #[test]
    fn conditioning_and_text_settings_parse_and_are_checked() {
        let mut c = TrainConfig::default();
        assert_eq!(c.model.conditioning, Conditioning::Auto);
        c.set("model.conditioning=text").unwrap();
        c.set("data.caption_column=caption").unwrap();
        c.set("model.text.train_text_encoder=false").unwrap();
        assert_eq!(c.model.conditioning, Conditioning::Text);
        assert_eq!(c.data.caption_column.as_deref(), Some("caption"));
        assert!(!c.model.text.train_text_encoder);
        assert_eq!(c.loader().caption_dropout, 0.1);
        let err = c.set("model.conditioning=words").unwrap_err().to_string();
        assert!(err.contains("model.conditioning"), "{err}");
        c.model.text.proportion_empty_prompts = 1.5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("model.text.proportion_empty_prompts"), "{err}");
        c.model.text.proportion_empty_prompts = 0.1;
        c.model.text.max_position_embeddings = 100;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("model.text.max_position_embeddings"), "{err}");
        // The default text models: a U-Net attending to the encoder's width.
        let t = TextConfig::default();
        let u = t.unet_config(3, 16, 0.0).unwrap();
        assert_eq!(u.encoder_width(), t.hidden_size);
        assert_eq!(t.text_encoder_config().unwrap().hidden_size(), 64);
        let bad = TextConfig {
            norm_num_groups: 7,
            ..TextConfig::default()
        };
        let err = bad.unet_config(3, 16, 0.0).unwrap_err().to_string();
        assert!(err.contains("model.text"), "{err}");
    }

    #[test]
    fn class_conditioning_adds_a_null_label() {
        let m = ModelConfig {
            class_conditional: true,
            ..ModelConfig::default()
        };
        let u = m.unet_config(1, 28, 10).unwrap();
        assert_eq!(u.num_class_embeds, Some(11));
        assert!(m
            .unet_config(1, 28, 0)
            .unwrap_err()
            .to_string()
            .contains("no class labels"));
    }
}
