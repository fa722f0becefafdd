//! Training the latent-diffusion VAE (`lmzh train-vae`): an
//! [`vae::AutoencoderKL`] trained as latent diffusion's first stage
//! (`LPIPSWithDiscriminator` of CompVis/latent-diffusion, with the bundled
//! classifier's features standing in for LPIPS), saved as a diffusers
//! `vae/` folder whose `scaling_factor` is set for a latent diffusion model.
//!
//! The loss of one batch `x` (images in [-1, 1], `P = C * H * W` values each):
//!
//! ```text
//! z ~ q(z | x)  (the posterior, reparameterised),  x' = decode(z)
//! loss = P * mean|x - x'|  (l1; or the squared error, l2)        reconstruction, summed per image
//!      + kl_weight * mean_images KL(q(z | x) || N(0, I))          summed per image
//!      + perceptual_weight * P * mean ||f(x) - f(x')||^2 / dim(f)  f: the bundled classifier's features
//!      + adversarial_weight * w * mean(-D(x'))                     from step disc_start
//! ```
//!
//! As in latent diffusion, the reconstruction is summed over the values of
//! an image (so `kl_weight = 1e-6` means what it means there), `w` is the
//! adaptive weight (the norm of the reconstruction loss's gradient at the
//! decoder's last layer over that of the adversarial loss, clamped to
//! [0, 1e4]), and the discriminator (a PatchGAN, pix2pix's
//! `NLayerDiscriminator`) is trained with the hinge loss from `disc_start`.
//!
//! The data is decoded once into memory ([`VaeTrainConfig::max_train_images`]
//! bounds it). Held-out images (a test split, another source, or a seeded
//! fraction of the data) measure the reconstruction PSNR against two
//! bilinear baselines ([`HeldOutEval`]) at every checkpoint and at the end.
//!
//! A run folder `runs_dir/<name>/` holds:
//!
//! - `config.toml`: the resolved [`VaeTrainConfig`], written before step 0;
//! - `metrics.jsonl`: one JSON object per logged step and per evaluation;
//! - `metrics.json`: the final evaluation and run facts;
//! - `vae/`: the diffusers `AutoencoderKL` folder (`config.json`,
//!   `diffusion_pytorch_model.safetensors`), replaced as a whole at every
//!   checkpoint and at the end;
//! - `reconstructions.png` (and `samples/step-XXXXXX.png` at checkpoints):
//!   rows of held-out originals, reconstructions, the bilinear baseline at
//!   the latent's size, and the bilinear baseline with as many values as the
//!   latent.
//!
//! ```no_run
//! use trainer::vae_train::{train_vae, VaeTrainConfig, VaeTrainOptions};
//! let config = VaeTrainConfig { steps: 200, name: "my-vae".into(), ..Default::default() };
//! let summary = train_vae(config, &VaeTrainOptions::default())?;
//! println!("{}", summary.eval.table());
//! # Ok::<(), trainer::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use data_pipeline::source::{Dataset, OpenOptions, SourceSpec};
use eval::feature_net::{fit_input, FeatureNet};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};
use tensor::DeviceSpec;
use vae::{Vae, VaeConfig};

use crate::optim::{AdamW, Decay, OptimConfig};
use crate::progress::{Lines, Progress, Status};
use crate::run_dir::{append_metrics, timestamped};
use crate::{Error, Result};

/// The highest PSNR reported for one image: identical images (MSE 0) count
/// as this many dB, so that a mean over images stays finite.
pub const PSNR_CAP_DB: f64 = 100.0;

/// Images encoded or decoded at once during evaluation.
const EVAL_CHUNK: i64 = 250;

/// Held-out images shown in `reconstructions.png`.
const STRIP_IMAGES: i64 = 10;

/// Training images decoded into memory at most, as bytes of float32.
const MAX_TRAIN_BYTES: usize = 4 << 30;

/// The reconstruction term of the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconstructionLoss {
    /// Absolute error (latent diffusion's choice).
    #[default]
    L1,
    /// Squared error.
    L2,
}

impl std::str::FromStr for ReconstructionLoss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "l1" => Ok(ReconstructionLoss::L1),
            "l2" | "mse" => Ok(ReconstructionLoss::L2),
            other => Err(setting(
                "reconstruction_loss",
                format!("expected `l1` or `l2`, got {other:?}"),
            )),
        }
    }
}

impl fmt::Display for ReconstructionLoss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReconstructionLoss::L1 => "l1",
            ReconstructionLoss::L2 => "l2",
        })
    }
}

/// Everything a VAE training run needs, as TOML (`config.toml` of a run).
/// Field names of the VAE's shape are diffusers' `AutoencoderKL` keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeTrainConfig {
    /// Run name: the folder `runs_dir/<name>`. Empty: `vae-<UTC timestamp>`.
    pub name: String,
    /// Where run folders go.
    pub runs_dir: PathBuf,
    /// `auto`, `cpu`, `cuda`, `cuda:N`.
    pub device: DeviceSpec,
    /// Seeds the weights, the held-out split, the shuffling and the noise.
    pub seed: u64,

    /// The training data: a source spec (`digits`, `mnist`, `fashion-mnist`,
    /// `cifar10`, a folder, `idx:IMAGES[,LABELS]`).
    pub data: String,
    /// The held-out images: `auto` (the test split of a benchmark set, else
    /// `held_out_fraction` of the data), `fraction`, or a source spec.
    pub held_out: String,
    /// The share of the data held out (not trained on) when `held_out` is
    /// `fraction`, or `auto` without a test split.
    pub held_out_fraction: f64,
    /// Held-out images evaluated at most (the first ones).
    pub max_held_out: usize,
    /// Training images decoded into memory at most (the first ones after
    /// the held-out split); none: all of them.
    pub max_train_images: Option<usize>,
    /// Images are resized (shorter side) and center-cropped to this square.
    pub resolution: u32,
    /// Image channels: 1 (grey), 3 (RGB) or 4 (RGBA).
    pub channels: u8,

    /// Channels per level of the VAE; every level but the last halves the
    /// resolution.
    pub block_out_channels: Vec<i64>,
    /// ResNet blocks per encoder level (the decoder has one more).
    pub layers_per_block: i64,
    /// Channels of the latent.
    pub latent_channels: i64,
    /// GroupNorm groups (must divide every entry of `block_out_channels`).
    pub norm_num_groups: i64,
    /// Self-attention in the encoder's and decoder's mid blocks.
    pub mid_block_add_attention: bool,

    /// Optimiser steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate of AdamW (linear warm-up, then cosine decay to a
    /// tenth of it).
    pub learning_rate: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,

    /// Weight of the KL term (per image, summed) against the reconstruction
    /// term (per image, summed); latent diffusion uses 1e-6.
    pub kl_weight: f64,
    /// `l1` or `l2`.
    pub reconstruction_loss: ReconstructionLoss,
    /// Weight of the feature-matching loss on the bundled classifier of the
    /// data (`digits` for digits and MNIST, `fmnist` for Fashion-MNIST);
    /// 0: off.
    pub perceptual_weight: f64,
    /// Weight of the PatchGAN generator loss (hinge GAN, adaptive weight);
    /// 0: no discriminator.
    pub adversarial_weight: f64,
    /// The step the discriminator and the adversarial loss start at.
    pub disc_start: u64,
    /// Stride-2 layers of the PatchGAN discriminator.
    pub disc_layers: u32,
    /// Channels of its first layer (doubled per layer, at most 8x).
    pub disc_channels: i64,

    /// A metrics line (and progress status) every this many steps.
    pub log_every: u64,
    /// Evaluate the held-out images and write `vae/` every this many steps
    /// (0: only at the end).
    pub checkpoint_every: u64,
}

impl Default for VaeTrainConfig {
    /// The default run: a 4 x 8 x 8 latent (downsampling 4) for the bundled
    /// digits at 32 x 32, a few minutes on a 2-core CPU.
    fn default() -> Self {
        VaeTrainConfig {
            name: String::new(),
            runs_dir: PathBuf::from("runs"),
            device: DeviceSpec::Auto,
            seed: 0,
            data: "digits".into(),
            held_out: "auto".into(),
            held_out_fraction: 0.1,
            max_held_out: 1000,
            max_train_images: None,
            resolution: 32,
            channels: 1,
            block_out_channels: vec![16, 32, 64],
            layers_per_block: 1,
            latent_channels: 4,
            norm_num_groups: 8,
            mid_block_add_attention: true,
            steps: 600,
            batch_size: 32,
            learning_rate: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.0,
            max_grad_norm: 0.0,
            kl_weight: 1e-6,
            reconstruction_loss: ReconstructionLoss::L1,
            perceptual_weight: 0.0,
            adversarial_weight: 0.0,
            disc_start: 500,
            disc_layers: 2,
            disc_channels: 32,
            log_every: 50,
            checkpoint_every: 200,
        }
    }
}

fn setting(key: &str, reason: impl Into<String>) -> Error {
    Error::Setting {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// The `vae` crate's errors as this crate's: an unsupported or contradictory
/// VAE config names its key as a setting (the keys of the VAE's shape are
/// the same in [`VaeTrainConfig`]).
impl From<vae::Error> for Error {
    fn from(e: vae::Error) -> Self {
        match e {
            vae::Error::Unsupported { key, value, reason } => Error::Setting {
                key,
                reason: format!("{value}: {reason}"),
            },
            vae::Error::InvalidConfig(reason) => setting("block_out_channels", reason),
            vae::Error::Io { path, error } => Error::Io { path, error },
            vae::Error::Tensor(e) => Error::Tensor(e),
            vae::Error::Torch(e) => Error::Torch(e),
            other => setting("vae", other.to_string()),
        }
    }
}

impl VaeTrainConfig {
    /// Reads a TOML file; unknown keys are an error naming them.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a VaeTrainConfig always serialises to TOML")
    }

    /// The training data's source spec.
    pub fn data_spec(&self) -> Result<SourceSpec> {
        self.data
            .parse()
            .map_err(|e: data_pipeline::Error| setting("data", e.to_string()))
    }

    /// How many times smaller the latent is than the image, on each side.
    pub fn downscale_factor(&self) -> i64 {
        1i64 << self.block_out_channels.len().saturating_sub(1).min(62)
    }

    /// The diffusers config of the VAE this run trains (`scaling_factor` 1
    /// until the held-out latents set it).
    pub fn vae_config(&self) -> VaeConfig {
        let n = self.block_out_channels.len();
        VaeConfig {
            in_channels: i64::from(self.channels),
            out_channels: i64::from(self.channels),
            down_block_types: vec!["DownEncoderBlock2D".into(); n],
            up_block_types: vec!["UpDecoderBlock2D".into(); n],
            block_out_channels: self.block_out_channels.clone(),
            layers_per_block: self.layers_per_block,
            latent_channels: self.latent_channels,
            norm_num_groups: self.norm_num_groups,
            sample_size: vae::config::SampleSize::Square(i64::from(self.resolution)),
            scaling_factor: 1.0,
            mid_block_add_attention: self.mid_block_add_attention,
            ..VaeConfig::default()
        }
    }

    /// Checks every value, naming the field and what was expected.
    pub fn validate(&self) -> Result<()> {
        self.data_spec()?;
        match self.held_out.as_str() {
            "auto" | "fraction" => {}
            spec => {
                spec.parse::<SourceSpec>().map_err(|e| {
                    setting(
                        "held_out",
                        format!("expected `auto`, `fraction` or a source spec: {e}"),
                    )
                })?;
            }
        }
        let positive = |key: &str, v: i64| {
            if v < 1 {
                Err(setting(key, format!("expected at least 1, got {v}")))
            } else {
                Ok(())
            }
        };
        if !(self.held_out_fraction > 0.0 && self.held_out_fraction < 1.0) {
            return Err(setting(
                "held_out_fraction",
                format!(
                    "expected a share of the data in (0, 1), got {}",
                    self.held_out_fraction
                ),
            ));
        }
        positive("max_held_out", self.max_held_out as i64)?;
        if let Some(n) = self.max_train_images {
            positive("max_train_images", n as i64)?;
        }
        if !matches!(self.channels, 1 | 3 | 4) {
            return Err(setting(
                "channels",
                format!(
                    "expected 1 (grey), 3 (RGB) or 4 (RGBA), got {}",
                    self.channels
                ),
            ));
        }
        if self.block_out_channels.is_empty() {
            return Err(setting(
                "block_out_channels",
                "expected at least one level, e.g. 16,32,64",
            ));
        }
        if self.block_out_channels.len() > 8 {
            return Err(setting(
                "block_out_channels",
                format!(
                    "{} levels: expected at most 8 (each but the last halves the resolution)",
                    self.block_out_channels.len()
                ),
            ));
        }
        positive("norm_num_groups", self.norm_num_groups)?;
        for &c in &self.block_out_channels {
            if c < 1 || c % self.norm_num_groups != 0 || c > 4096 {
                return Err(setting(
                    "block_out_channels",
                    format!(
                        "{c}: expected positive multiples of norm_num_groups = {} (at most 4096)",
                        self.norm_num_groups
                    ),
                ));
            }
        }
        positive("layers_per_block", self.layers_per_block)?;
        positive("latent_channels", self.latent_channels)?;
        let f = self.downscale_factor();
        let r = i64::from(self.resolution);
        if r < 1 || r % f != 0 || r > 4096 {
            return Err(setting(
                "resolution",
                format!(
                    "{r}: expected a multiple of {f} (the VAE's downsampling factor, \
                     2^(levels of block_out_channels - 1)) up to 4096"
                ),
            ));
        }
        positive("steps", self.steps as i64)?;
        positive("batch_size", self.batch_size as i64)?;
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(setting(
                "learning_rate",
                format!("expected a positive number, got {}", self.learning_rate),
            ));
        }
        for (key, v) in [
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
            ("kl_weight", self.kl_weight),
            ("perceptual_weight", self.perceptual_weight),
            ("adversarial_weight", self.adversarial_weight),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(setting(
                    key,
                    format!("expected a finite number >= 0, got {v}"),
                ));
            }
        }
        if self.adversarial_weight > 0.0 {
            if !(1..=6).contains(&self.disc_layers) {
                return Err(setting(
                    "disc_layers",
                    format!("expected 1 to 6, got {}", self.disc_layers),
                ));
            }
            // Each layer halves; the two stride-1 4x4 convolutions take 2 more.
            let side = r >> self.disc_layers;
            if side < 3 {
                return Err(setting(
                    "disc_layers",
                    format!(
                        "{} stride-2 layers leave {r}-pixel images {side} pixels wide; the \
                         discriminator needs at least 3: use fewer layers",
                        self.disc_layers
                    ),
                ));
            }
            if !(1..=1024).contains(&self.disc_channels) {
                return Err(setting(
                    "disc_channels",
                    format!("expected 1 to 1024, got {}", self.disc_channels),
                ));
            }
        }
        positive("log_every", self.log_every as i64)?;
        if self.perceptual_weight > 0.0 {
            perceptual_net_for(&self.data_spec()?)?;
        }
        Ok(())
    }

    fn optim(&self) -> OptimConfig {
        OptimConfig {
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            warmup_steps: self.warmup_steps,
            decay: Decay::Cosine,
            min_lr_ratio: 0.1,
            ..OptimConfig::default()
        }
    }
}

/// The bundled classifier whose features the perceptual loss compares, for
/// a data source.
fn perceptual_net_for(spec: &SourceSpec) -> Result<&'static str> {
    eval::builtin::for_source(spec).ok_or_else(|| {
        setting(
            "perceptual_weight",
            format!(
                "no bundled classifier fits the data `{spec}`: the perceptual loss uses the \
                 `digits` net (for digits and mnist) or the `fmnist` net (for fashion-mnist); \
                 set it to 0 for this data"
            ),
        )
    })
}

// ---------------------------------------------------------------------------
// PSNR and the bilinear baselines

/// PSNR in dB of a mean squared error on images of data range 1:
/// `10 log10(1 / mse)`; infinite when `mse` is 0.
pub fn psnr_from_mse(mse: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        -10.0 * mse.log10()
    }
}

/// Images `[N, C, H, W]` in [-1, 1] as [0, 1] (clamped).
pub fn to_unit_range(x: &Tensor) -> Tensor {
    ((x.to_kind(Kind::Float) + 1.0) / 2.0).clamp(0.0, 1.0)
}

/// Per-image PSNR (dB, data range 1) of `a` against `b`, both `[N, C, H, W]`
/// in [0, 1]; each capped at [`PSNR_CAP_DB`].
pub fn psnr_per_image(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    if a.size() != b.size() || a.dim() != 4 {
        return Err(setting(
            "psnr",
            format!(
                "images of shapes {:?} and {:?}: expected two equal [N, C, H, W]",
                a.size(),
                b.size()
            ),
        ));
    }
    let mse = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .square()
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double);
    let mse: Vec<f64> = Vec::try_from(mse.to_device(Device::Cpu))?;
    Ok(mse
        .into_iter()
        .map(|m| psnr_from_mse(m).min(PSNR_CAP_DB))
        .collect())
}

/// The mean of [`psnr_per_image`].
pub fn mean_psnr(a: &Tensor, b: &Tensor) -> Result<f64> {
    let v = psnr_per_image(a, b)?;
    if v.is_empty() {
        return Err(setting("psnr", "no images"));
    }
    Ok(v.iter().sum::<f64>() / v.len() as f64)
}

/// The bilinear round trip of the baselines: `x` (`[N, C, H, W]`) resized
/// bilinearly with antialiasing to `h x w` and back to `H x W` (PyTorch's
/// `interpolate(mode="bilinear", antialias=True, align_corners=False)` both
/// ways).
pub fn bilinear_round_trip(x: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 4 || h < 1 || w < 1 {
        return Err(setting(
            "bilinear",
            format!("images {size:?} to {h}x{w}: expected [N, C, H, W] and a positive size"),
        ));
    }
    let x = x.to_kind(Kind::Float);
    let small = x.f_internal_upsample_bilinear2d_aa([h, w], false, None, None)?;
    Ok(small.f_internal_upsample_bilinear2d_aa([size[2], size[3]], false, None, None)?)
}

/// The size of the image holding as many values as a latent of `values`
/// numbers, for `channels`-channel images of aspect `height : width`:
/// `values / channels` pixels (for grey images, one pixel per latent value),
/// as close to that aspect as whole pixels allow.
pub fn equal_values_size(values: i64, channels: i64, height: i64, width: i64) -> (i64, i64) {
    let pixels = (values / channels.max(1)).max(1) as f64;
    let aspect = height.max(1) as f64 / width.max(1) as f64;
    let h = (pixels * aspect).sqrt().round().max(1.0);
    let w = (pixels / h).round().max(1.0);
    (h as i64, w as i64)
}

/// The held-out evaluation of a VAE: reconstruction PSNR and the two
/// bilinear baselines, on images in [0, 1] with data range 1 (mean of the
/// per-image PSNRs, each capped at [`PSNR_CAP_DB`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOutEval {
    /// The held-out images, e.g. `500 images of digits (10% held out, seed 0)`.
    pub held_out: String,
    /// How many images.
    pub images: usize,
    /// Image channels, height, width.
    pub image_shape: [i64; 3],
    /// Latent channels, height, width.
    pub latent_shape: [i64; 3],
    /// PSNR of the decoded posterior mode.
    pub psnr: f64,
    /// Bilinear down to the latent's height x width and back up.
    pub bilinear_latent_size: Baseline,
    /// Bilinear down to an image with as many values as the latent and back up.
    pub bilinear_equal_values: Baseline,
    /// Standard deviation of latents drawn from the held-out posteriors.
    pub latent_std: f64,
    /// `1 / latent_std`: the `scaling_factor` written to `vae/config.json`.
    pub scaling_factor: f64,
}

/// One bilinear baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The size the images go down to, height and width.
    pub size: [i64; 2],
    pub psnr: f64,
}

impl HeldOutEval {
    /// The PSNR table `lmzh train-vae` prints.
    pub fn table(&self) -> String {
        let [c, h, w] = self.image_shape;
        let [zc, zh, zw] = self.latent_shape;
        let grey = |ch: i64| if ch == 1 { "grey" } else { "channels" };
        let rows = [
            (
                format!("VAE, {zc}x{zh}x{zw} latent ({} values)", zc * zh * zw),
                self.psnr,
            ),
            (
                format!(
                    "bilinear, latent's size: {}x{} {} ({} values)",
                    self.bilinear_latent_size.size[0],
                    self.bilinear_latent_size.size[1],
                    grey(c),
                    c * self.bilinear_latent_size.size[0] * self.bilinear_latent_size.size[1]
                ),
                self.bilinear_latent_size.psnr,
            ),
            (
                format!(
                    "bilinear, latent's values: {}x{} {} ({} values)",
                    self.bilinear_equal_values.size[0],
                    self.bilinear_equal_values.size[1],
                    grey(c),
                    c * self.bilinear_equal_values.size[0] * self.bilinear_equal_values.size[1]
                ),
                self.bilinear_equal_values.psnr,
            ),
        ];
        let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = format!(
            "held-out reconstruction PSNR: {}, {c}x{h}x{w}, in [0, 1], data range 1\n",
            self.held_out
        );
        for (name, psnr) in rows {
            out.push_str(&format!("  {name:<width$}  {psnr:6.2} dB\n"));
        }
        out.push_str(&format!(
            "  latent std {:.4} -> scaling_factor {:.4}",
            self.latent_std, self.scaling_factor
        ));
        out
    }
}

// ---------------------------------------------------------------------------
// The discriminator

/// pix2pix's PatchGAN `NLayerDiscriminator` as latent diffusion uses it:
/// 4x4 convolutions, LeakyReLU(0.2), BatchNorm after every convolution but
/// the first and the last; one logit per patch.
#[derive(Debug)]
pub struct PatchDiscriminator {
    pub vs: nn::VarStore,
    convs: Vec<nn::Conv2D>,
    norms: Vec<Option<nn::BatchNorm>>,
}

impl PatchDiscriminator {
    /// `layers` stride-2 convolutions from `channels` (doubled per layer, at
    /// most 8x), a stride-1 one, and the 1-channel output; weights drawn
    /// from N(0, 0.02) (BatchNorm scales from N(1, 0.02)).
    pub fn new(in_channels: i64, channels: i64, layers: u32, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let conv = |i: usize, cin: i64, cout: i64, stride: i64, bias: bool| {
            nn::conv2d(
                &root / "main" / i,
                cin,
                cout,
                4,
                nn::ConvConfig {
                    stride,
                    padding: 1,
                    bias,
                    ws_init: init,
                    ..Default::default()
                },
            )
        };
        let norm = |i: usize, c: i64| {
            nn::batch_norm2d(
                &root / "main" / i,
                c,
                nn::BatchNormConfig {
                    ws_init: nn::Init::Randn {
                        mean: 1.0,
                        stdev: 0.02,
                    },
                    ..Default::default()
                },
            )
        };
        let mut convs = vec![conv(0, in_channels, channels, 2, true)];
        let mut norms = vec![None];
        let mut prev = channels;
        for n in 1..=layers as usize {
            let mult = 1i64 << n.min(3);
            let stride = if n < layers as usize { 2 } else { 1 };
            convs.push(conv(2 * n, prev, channels * mult, stride, false));
            norms.push(Some(norm(2 * n + 1, channels * mult)));
            prev = channels * mult;
        }
        convs.push(conv(2 * layers as usize + 2, prev, 1, 1, true));
        norms.push(None);
        PatchDiscriminator { vs, convs, norms }
    }

    /// Patch logits `[N, 1, h, w]` of images `[N, C, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let last = self.convs.len() - 1;
        let mut h = x.shallow_clone();
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            h = conv.forward(&h);
            if let Some(n) = norm {
                h = n.forward_t(&h, train);
            }
            if i < last {
                h = h.maximum(&(&h * 0.2));
            }
        }
        h
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        named_trainable(&self.vs)
    }
}

fn named_trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// The hinge loss of a discriminator: `(mean relu(1 - real) + mean relu(1 + fake)) / 2`.
pub fn hinge_d_loss(logits_real: &Tensor, logits_fake: &Tensor) -> Tensor {
    let real = (logits_real.neg() + 1.0).relu().mean(Kind::Float);
    let fake = (logits_fake + 1.0).relu().mean(Kind::Float);
    (real + fake) * 0.5
}

// ---------------------------------------------------------------------------
// The trainer

/// How [`train_vae`] runs.
#[derive(Debug, Clone)]
pub struct VaeTrainOptions {
    /// Show progress on stderr: a bar on a terminal, plain lines otherwise.
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to stop after the current step; the run still
    /// evaluates and writes `vae/`.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl Default for VaeTrainOptions {
    fn default() -> Self {
        VaeTrainOptions {
            progress: true,
            interrupt: None,
        }
    }
}

/// The losses of one step (means over the batch).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct StepLosses {
    pub step: u64,
    /// The VAE's whole loss.
    pub loss: f64,
    /// The reconstruction error per value (mean |x - x'| or squared).
    pub rec: f64,
    /// KL divergence per image.
    pub kl: f64,
    /// The perceptual term per image, before weighting (0 when off).
    pub perceptual: f64,
    /// The generator's adversarial loss (0 before `disc_start` or when off).
    pub g_loss: f64,
    /// The adaptive weight of the adversarial loss.
    pub d_weight: f64,
    /// The discriminator's hinge loss.
    pub d_loss: f64,
    pub lr: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct VaeSummary {
    pub run_dir: PathBuf,
    /// Steps trained.
    pub steps: u64,
    pub last_loss: Option<f64>,
    /// Training images per second over the loop.
    pub images_per_second: f64,
    /// Wall time of the whole run, setup and evaluation included.
    pub wall_seconds: f64,
    pub interrupted: bool,
    /// Weights of the VAE.
    pub parameters: i64,
    /// The final held-out evaluation.
    pub eval: HeldOutEval,
}

/// A VAE training run: the model, its optimiser, the data in memory and,
/// when on, the discriminator and the perceptual net.
#[derive(Debug)]
pub struct VaeTrainer {
    pub config: VaeTrainConfig,
    /// The VAE being trained.
    pub vae: Vae,
    device: Device,
    optim: AdamW,
    disc: Option<(PatchDiscriminator, AdamW)>,
    perceptual: Option<FeatureNet>,
    /// Training images `[N, C, R, R]` in [-1, 1], on the device.
    train: Tensor,
    /// Held-out images `[M, C, R, R]` in [-1, 1], on the CPU.
    held_out: Tensor,
    held_out_desc: String,
    /// Steps done.
    pub step: u64,
    epoch: u64,
    order: Vec<i64>,
    cursor: usize,
    interrupt: Option<Arc<AtomicBool>>,
}

impl VaeTrainer {
    /// Validates the config, seeds, loads the training and held-out images
    /// and builds the VAE (and the discriminator and perceptual net when
    /// their weights are positive). Writes nothing.
    pub fn new(config: VaeTrainConfig, opts: &VaeTrainOptions) -> Result<Self> {
        config.validate()?;
        let (train, held_out, desc) = load_data(&config)?;
        Self::with_data(config, train, held_out, desc, opts)
    }

    /// [`VaeTrainer::new`] on images given as `[N, C, R, R]` tensors in
    /// [-1, 1] (the config's data fields are not read).
    pub fn with_data(
        config: VaeTrainConfig,
        train: Tensor,
        held_out: Tensor,
        held_out_desc: String,
        opts: &VaeTrainOptions,
    ) -> Result<Self> {
        config.validate()?;
        let r = i64::from(config.resolution);
        let want = [i64::from(config.channels), r, r];
        for (key, t) in [("data", &train), ("held_out", &held_out)] {
            let size = t.size();
            if size.len() != 4 || size[1..] != want || size[0] < 1 {
                return Err(setting(
                    key,
                    format!("images of shape {size:?}: expected [N >= 1, {want:?}]"),
                ));
            }
        }
        if (train.size()[0] as usize) < config.batch_size {
            return Err(setting(
                "batch_size",
                format!(
                    "{} is more than the {} training images",
                    config.batch_size,
                    train.size()[0]
                ),
            ));
        }
        let device = config.device.resolve()?;
        tensor::seed::seed_everything(config.seed);
        let vae = Vae::new(&config.vae_config(), device)?;
        let optim = AdamW::new(named_trainable(&vae.vs), config.optim())?;
        let disc = if config.adversarial_weight > 0.0 {
            let d = PatchDiscriminator::new(
                i64::from(config.channels),
                config.disc_channels,
                config.disc_layers,
                device,
            );
            // latent diffusion's discriminator optimiser: Adam, betas (0.5, 0.9).
            let o = AdamW::new(
                d.params(),
                OptimConfig {
                    beta1: 0.5,
                    beta2: 0.9,
                    ..config.optim()
                },
            )?;
            Some((d, o))
        } else {
            None
        };
        let perceptual = if config.perceptual_weight > 0.0 {
            let name = perceptual_net_for(&config.data_spec()?)?;
            let bytes = eval::builtin::bytes(name)
                .ok_or_else(|| setting("perceptual_weight", format!("no bundled net `{name}`")))?;
            let net = FeatureNet::from_bytes(bytes, Path::new(name), device)?;
            for (_, v) in net.var_store().variables() {
                let _ = v.set_requires_grad(false);
            }
            Some(net)
        } else {
            None
        };
        let n = train.size()[0];
        let mut t = VaeTrainer {
            train: train.to_kind(Kind::Float).to_device(device),
            held_out: held_out.to_kind(Kind::Float).to_device(Device::Cpu),
            held_out_desc,
            vae,
            device,
            optim,
            disc,
            perceptual,
            step: 0,
            epoch: 0,
            order: Vec::new(),
            cursor: 0,
            interrupt: opts.interrupt.clone(),
            config,
        };
        t.order = t.permutation(n as usize);
        tracing::info!(
            train_images = n,
            held_out = %t.held_out_desc,
            parameters = t.vae.num_parameters(),
            "VAE training set up"
        );
        Ok(t)
    }

    /// The order of the training images in the current epoch.
    fn permutation(&self, n: usize) -> Vec<i64> {
        let seed =
            tensor::seed::derive_seed(self.config.seed, &format!("vae-epoch-{}", self.epoch));
        shuffled(n, seed)
    }

    /// The training images of the next batch (an epoch's images in a seeded
    /// order; the last incomplete batch of an epoch is dropped).
    pub fn next_batch(&mut self) -> Tensor {
        let b = self.config.batch_size;
        if self.cursor + b > self.order.len() {
            self.epoch += 1;
            self.cursor = 0;
            self.order = self.permutation(self.order.len());
        }
        let idx =
            Tensor::from_slice(&self.order[self.cursor..self.cursor + b]).to_device(self.device);
        self.cursor += b;
        self.train.index_select(0, &idx)
    }

    /// Training images held in memory.
    pub fn train_images(&self) -> i64 {
        self.train.size()[0]
    }

    /// The held-out images `[M, C, R, R]` in [-1, 1] (CPU).
    pub fn held_out(&self) -> &Tensor {
        &self.held_out
    }

    /// One optimiser step of the VAE (and, from `disc_start`, one of the
    /// discriminator) on `x` (`[B, C, R, R]` in [-1, 1]).
    pub fn step(&mut self, x: &Tensor) -> Result<StepLosses> {
        let c = self.config.clone();
        let x = x.to_kind(Kind::Float).to_device(self.device);
        let lr = c.optim().lr_at(self.step, c.steps);
        let model = &self.vae.model;
        let posterior = model.encode_t(&x, true)?;
        let noise = Tensor::randn(posterior.mean.size(), (Kind::Float, self.device));
        let z = posterior.sample_with(&noise)?;
        let xr = model.decode_t(&z, true)?;
        let values = (x.size()[1] * x.size()[2] * x.size()[3]) as f64;
        let err = match c.reconstruction_loss {
            ReconstructionLoss::L1 => (&x - &xr).abs(),
            ReconstructionLoss::L2 => (&x - &xr).square(),
        };
        let rec = err.mean(Kind::Float);
        let mut nll = &rec * values;
        let mut perceptual = 0.0;
        if let Some(net) = &self.perceptual {
            let (fx, _) = net.forward_t(&fit_input(&x, 1, net.info().resolution)?, false);
            let (fr, _) = net.forward_t(&fit_input(&xr, 1, net.info().resolution)?, false);
            let p = (fr - fx.detach()).square().mean(Kind::Float);
            perceptual = p.double_value(&[]);
            nll += p * (c.perceptual_weight * values);
        }
        let kl = posterior.kl().mean(Kind::Float);
        let mut loss = &nll + &kl * c.kl_weight;
        let adversarial = self.step >= c.disc_start;
        let (mut g_value, mut d_weight) = (0.0, 0.0);
        if let (Some((disc, _)), true) = (&self.disc, adversarial) {
            let g_loss = -disc.forward_t(&xr, true).mean(Kind::Float);
            let last = &model.decoder.conv_out.ws;
            let g_nll = Tensor::run_backward(&[&nll], &[last], true, false);
            let g_adv = Tensor::run_backward(&[&g_loss], &[last], true, false);
            let w = (g_nll[0].norm() / (g_adv[0].norm() + 1e-4))
                .clamp(0.0, 1e4)
                .detach()
                * c.adversarial_weight;
            d_weight = w.double_value(&[]);
            g_value = g_loss.double_value(&[]);
            loss += g_loss * w;
        }
        self.optim.zero_grad();
        loss.backward();
        if c.max_grad_norm > 0.0 {
            let norm = self.optim.grad_norm();
            self.optim.clip_grad_norm(&norm);
        }
        self.optim.step(lr);
        let mut d_value = 0.0;
        if let (Some((disc, opt)), true) = (&mut self.disc, adversarial) {
            opt.zero_grad();
            let d_loss = hinge_d_loss(
                &disc.forward_t(&x, true),
                &disc.forward_t(&xr.detach(), true),
            );
            d_loss.backward();
            opt.step(lr);
            d_value = d_loss.double_value(&[]);
        }
        self.step += 1;
        let out = StepLosses {
            step: self.step,
            loss: loss.double_value(&[]),
            rec: rec.double_value(&[]),
            kl: kl.double_value(&[]),
            perceptual,
            g_loss: g_value,
            d_weight,
            d_loss: d_value,
            lr,
        };
        if !out.loss.is_finite() {
            return Err(Error::Diverged {
                count: 1,
                step: self.step,
            });
        }
        Ok(out)
    }

    /// Held-out PSNR of the VAE (decoded posterior mode) and of the two
    /// bilinear baselines, and the latent scaling factor (1 / std of latents
    /// drawn from the held-out posteriors, as latent diffusion computes it).
    pub fn evaluate(&self) -> Result<HeldOutEval> {
        tch::no_grad(|| {
            let m = self.held_out.size()[0];
            let (mut recon, mut latents) = (Vec::new(), Vec::new());
            let mut start = 0;
            while start < m {
                let len = EVAL_CHUNK.min(m - start);
                let x = self.held_out.narrow(0, start, len).to_device(self.device);
                let posterior = self.vae.model.encode(&x)?;
                let noise = Tensor::randn(posterior.mean.size(), (Kind::Float, self.device));
                latents.push(posterior.sample_with(&noise)?.to_device(Device::Cpu));
                recon.push(
                    self.vae
                        .model
                        .decode(&posterior.mode())?
                        .to_device(Device::Cpu),
                );
                start += len;
            }
            let recon = Tensor::cat(&recon, 0);
            let latents = Tensor::cat(&latents, 0);
            let x01 = to_unit_range(&self.held_out);
            let size = self.held_out.size();
            let lat = latents.size();
            let (c, h, w) = (size[1], size[2], size[3]);
            let (zc, zh, zw) = (lat[1], lat[2], lat[3]);
            let eq = equal_values_size(zc * zh * zw, c, h, w);
            let latent_std = latents.to_kind(Kind::Double).std(true).double_value(&[]);
            let scaling_factor = if latent_std > 0.0 && latent_std.is_finite() {
                1.0 / latent_std
            } else {
                tracing::warn!("held-out latents have std {latent_std}; scaling_factor set to 1");
                1.0
            };
            Ok(HeldOutEval {
                held_out: self.held_out_desc.clone(),
                images: m as usize,
                image_shape: [c, h, w],
                latent_shape: [zc, zh, zw],
                psnr: mean_psnr(&to_unit_range(&recon), &x01)?,
                bilinear_latent_size: Baseline {
                    size: [zh, zw],
                    psnr: mean_psnr(&bilinear_round_trip(&x01, zh, zw)?.clamp(0.0, 1.0), &x01)?,
                },
                bilinear_equal_values: Baseline {
                    size: [eq.0, eq.1],
                    psnr: mean_psnr(
                        &bilinear_round_trip(&x01, eq.0, eq.1)?.clamp(0.0, 1.0),
                        &x01,
                    )?,
                },
                latent_std,
                scaling_factor,
            })
        })
    }

    /// Writes the VAE as a diffusers folder at `dir` with `scaling_factor`,
    /// replacing a previous one as a whole: written beside it, then renamed
    /// into place.
    pub fn save_vae(&mut self, dir: &Path, scaling_factor: f64) -> Result<()> {
        self.vae.model.config.scaling_factor = scaling_factor;
        save_folder_atomic(&self.vae, dir)
    }

    /// The strip of `reconstructions.png`: rows of up to ten held-out
    /// originals (evenly spaced in the held-out set), their reconstructions, the bilinear baseline at the
    /// latent's size and the one with the latent's number of values, as a
    /// batch `[4 k, C, R, R]` in [-1, 1].
    pub fn strip(&self, eval: &HeldOutEval) -> Result<Tensor> {
        let m = self.held_out.size()[0];
        let k = STRIP_IMAGES.min(m);
        // Evenly spread over the held-out set (sources sorted by class show
        // every class).
        let idx: Vec<i64> = (0..k).map(|i| i * m / k).collect();
        let x = self.held_out.index_select(0, &Tensor::from_slice(&idx));
        let recon = tch::no_grad(|| -> Result<Tensor> {
            let posterior = self.vae.model.encode(&x.to_device(self.device))?;
            Ok(self
                .vae
                .model
                .decode(&posterior.mode())?
                .to_device(Device::Cpu))
        })?;
        let [h1, w1] = eval.bilinear_latent_size.size;
        let [h2, w2] = eval.bilinear_equal_values.size;
        let rows = [
            x.shallow_clone(),
            recon.clamp(-1.0, 1.0),
            bilinear_round_trip(&x, h1, w1)?.clamp(-1.0, 1.0),
            bilinear_round_trip(&x, h2, w2)?.clamp(-1.0, 1.0),
        ];
        Ok(Tensor::cat(&rows, 0))
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// The run folder of this config.
    pub fn run_dir(&self) -> PathBuf {
        self.config.runs_dir.join(&self.config.name)
    }

    /// Evaluates, writes `vae/`, the strip (`png`) and an evaluation line
    /// of `metrics.jsonl`.
    fn checkpoint(&mut self, root: &Path, png: &Path) -> Result<HeldOutEval> {
        let eval = self.evaluate()?;
        self.save_vae(&root.join("vae"), eval.scaling_factor)?;
        let strip = self.strip(&eval)?;
        tensor::image::save_grid(png, &strip, STRIP_IMAGES.min(self.held_out.size()[0]))?;
        append_metrics(
            &root.join("metrics.jsonl"),
            &serde_json::json!({ "step": self.step, "eval": eval }),
        )?;
        tracing::info!(
            step = self.step,
            psnr = eval.psnr,
            bilinear_latent_size = eval.bilinear_latent_size.psnr,
            bilinear_equal_values = eval.bilinear_equal_values.psnr,
            scaling_factor = eval.scaling_factor,
            "held-out evaluation; wrote {}",
            root.join("vae").display()
        );
        Ok(eval)
    }

    /// Trains `config.steps` steps (or until interrupted) into the run
    /// folder, with metrics lines every `log_every` steps and checkpoints
    /// every `checkpoint_every`, then evaluates and writes `vae/`,
    /// `reconstructions.png` and `metrics.json`.
    pub fn run(&mut self, progress: &mut dyn Progress) -> Result<VaeSummary> {
        let started = Instant::now();
        if self.config.name.is_empty() {
            self.config.name = timestamped("vae");
        }
        let root = self.run_dir();
        let samples = root.join("samples");
        std::fs::create_dir_all(&samples).map_err(|e| Error::io(&samples, e))?;
        tensor::fs::write_bytes_atomic(
            &root.join("config.toml"),
            self.config.to_toml().as_bytes(),
        )?;
        let metrics = root.join("metrics.jsonl");
        if metrics.exists() {
            std::fs::remove_file(&metrics).map_err(|e| Error::io(&metrics, e))?;
        }
        let total = self.config.steps;
        progress.start(self.step, total);
        let result = self.train_loop(&root, progress);
        progress.finish(result.is_ok());
        let (last_loss, images, secs, interrupted) = result?;
        let eval = self.checkpoint(&root, &root.join("reconstructions.png"))?;
        let wall = started.elapsed().as_secs_f64();
        let summary = VaeSummary {
            run_dir: root.clone(),
            steps: self.step,
            last_loss,
            images_per_second: images as f64 / secs.max(1e-9),
            wall_seconds: wall,
            interrupted,
            parameters: self.vae.num_parameters(),
            eval,
        };
        let json = serde_json::json!({
            "steps": summary.steps,
            "interrupted": interrupted,
            "wall_seconds": wall,
            "images_per_second": summary.images_per_second,
            "last_loss": last_loss,
            "parameters": summary.parameters,
            "train_images": self.train_images(),
            "data": self.config.data,
            "downscale_factor": self.config.downscale_factor(),
            "eval": summary.eval,
        });
        let text = serde_json::to_string_pretty(&json).expect("serialisable");
        tensor::fs::write_bytes_atomic(&root.join("metrics.json"), text.as_bytes())?;
        Ok(summary)
    }

    /// The loop: (last logged loss, images trained, seconds training, interrupted).
    fn train_loop(
        &mut self,
        root: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(Option<f64>, u64, f64, bool)> {
        let metrics = root.join("metrics.jsonl");
        let (mut sum, mut count, mut images) = (0.0, 0u64, 0u64);
        let mut last_loss = None;
        let mut train_secs = 0.0;
        let mut window = Instant::now();
        let mut window_images = 0u64;
        while self.step < self.config.steps {
            if self.interrupted() {
                return Ok((last_loss, images, train_secs, true));
            }
            let t0 = Instant::now();
            let x = self.next_batch();
            let out = self.step(&x)?;
            train_secs += t0.elapsed().as_secs_f64();
            let b = self.config.batch_size as u64;
            images += b;
            window_images += b;
            sum += out.loss;
            count += 1;
            if self.step.is_multiple_of(self.config.log_every) || self.step == self.config.steps {
                let mean = sum / count as f64;
                let rate = window_images as f64 / window.elapsed().as_secs_f64().max(1e-9);
                let mut line = serde_json::to_value(out).expect("serialisable");
                line["loss"] = serde_json::json!(mean);
                line["images_per_second"] = serde_json::json!(rate);
                append_metrics(&metrics, &line)?;
                tracing::debug!(
                    step = self.step,
                    loss = mean,
                    rec = out.rec,
                    kl = out.kl,
                    "step"
                );
                progress.status(&Status {
                    loss: Some(mean),
                    images_per_second: Some(rate),
                    fd: None,
                });
                last_loss = Some(mean);
                (sum, count, window_images) = (0.0, 0, 0);
                window = Instant::now();
            }
            let every = self.config.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < self.config.steps {
                let png = root
                    .join("samples")
                    .join(format!("step-{:06}.png", self.step));
                self.checkpoint(root, &png)?;
                window = Instant::now();
            }
            progress.position(self.step);
        }
        Ok((last_loss, images, train_secs, false))
    }
}

/// Trains a VAE as `config` says, showing progress as `opts` says; see
/// [`VaeTrainer::run`].
pub fn train_vae(config: VaeTrainConfig, opts: &VaeTrainOptions) -> Result<VaeSummary> {
    let mut trainer = VaeTrainer::new(config, opts)?;
    if !opts.progress {
        return trainer.run(&mut ());
    }
    #[cfg(feature = "cli")]
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return trainer.run(&mut crate::progress::Bar::new());
    }
    trainer.run(&mut Lines::stderr())
}

/// Writes `vae` with [`Vae::save`] into a temporary folder beside `dir`,
/// then puts it in place of `dir`: a reader sees the old folder or the new
/// one, never a config of one with the weights of the other.
pub fn save_folder_atomic(vae: &Vae, dir: &Path) -> Result<()> {
    let tmp = tensor::fs::temp_path(dir);
    vae.save(&tmp)?;
    if dir.exists() {
        let old = tensor::fs::temp_path(dir);
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        if let Err(e) = std::fs::remove_dir_all(&old) {
            tracing::warn!("could not remove {}: {e}", old.display());
        }
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// `0..n` in an order drawn from `seed` (Fisher-Yates over SplitMix64).
fn shuffled(n: usize, seed: u64) -> Vec<i64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut v: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// The training and held-out images of a config, and a description of the
/// held-out set.
fn load_data(c: &VaeTrainConfig) -> Result<(Tensor, Tensor, String)> {
    let spec = c.data_spec()?;
    let open = |spec: &SourceSpec, key: &str| -> Result<Dataset> {
        spec.open(&OpenOptions::default())
            .map_err(|e| setting(key, e.to_string()))
    };
    let data = open(&spec, "data")?;
    let n = data.len();
    if n < 2 {
        return Err(setting(
            "data",
            format!("`{spec}` has {n} image(s); training needs at least 2"),
        ));
    }
    let held_spec = match c.held_out.as_str() {
        "fraction" => None,
        "auto" => {
            let auto = crate::evaluate::auto_reference(&spec);
            (auto != spec).then_some(auto)
        }
        s => Some(
            s.parse::<SourceSpec>()
                .map_err(|e| setting("held_out", e.to_string()))?,
        ),
    };
    let (mut train_idx, held_out, desc) = match held_spec {
        Some(hs) => {
            let ds = open(&hs, "held_out")?;
            let m = ds.len().min(c.max_held_out);
            if m == 0 {
                return Err(setting("held_out", format!("`{hs}` has no images")));
            }
            let idx: Vec<usize> = (0..m).collect();
            let images = images_of(&ds, &idx, c, "held_out")?;
            (
                (0..n).collect(),
                images,
                format!("the first {m} images of {hs}"),
            )
        }
        None => {
            let order = shuffled(n, tensor::seed::derive_seed(c.seed, "vae-held-out"));
            let k = ((n as f64 * c.held_out_fraction).round() as usize).clamp(1, n - 1);
            let (held, train) = order.split_at(k);
            let mut held: Vec<usize> = held.iter().map(|&i| i as usize).collect();
            let mut train: Vec<usize> = train.iter().map(|&i| i as usize).collect();
            held.sort_unstable();
            train.sort_unstable();
            held.truncate(c.max_held_out);
            let images = images_of(&data, &held, c, "held_out")?;
            let desc = format!(
                "{} images of {spec} ({k} of {n} held out at random with seed {}, not trained on)",
                held.len(),
                c.seed
            );
            (train, images, desc)
        }
    };
    if let Some(max) = c.max_train_images {
        train_idx.truncate(max);
    }
    let r = c.resolution as usize;
    let bytes = train_idx.len() * usize::from(c.channels) * r * r * 4;
    if bytes > MAX_TRAIN_BYTES {
        return Err(setting(
            "max_train_images",
            format!(
                "{} training images of {}x{r}x{r} take {} MiB in memory, more than {} MiB: \
                 set max_train_images (or a lower resolution)",
                train_idx.len(),
                c.channels,
                bytes >> 20,
                MAX_TRAIN_BYTES >> 20
            ),
        ));
    }
    let train = images_of(&data, &train_idx, c, "data")?;
    Ok((train, held_out, desc))
}

/// Images `idx` of `ds`, preprocessed to the config's resolution and channels.
fn images_of(ds: &Dataset, idx: &[usize], c: &VaeTrainConfig, key: &str) -> Result<Tensor> {
    eval::images::from_dataset(ds, idx, c.resolution, c.channels)
        .map(|(images, _)| images)
        .map_err(|e| setting(key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(edit: fn(&mut VaeTrainConfig)) -> String {
        let mut c = VaeTrainConfig::default();
        edit(&mut c);
        c.validate().unwrap_err().to_string()
    }

    #[test]
    fn the_default_config_is_valid_and_round_trips_as_toml() {
        let c = VaeTrainConfig::default();
        c.validate().unwrap();
        assert_eq!(c.downscale_factor(), 4);
        let back: VaeTrainConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
        let v = c.vae_config();
        v.validate().unwrap();
        assert_eq!((v.in_channels, v.latent_channels), (1, 4));
        let err = toml::from_str::<VaeTrainConfig>("kl_wieght = 1.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kl_wieght"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        type Edit = fn(&mut VaeTrainConfig);
        let cases: Vec<(Edit, &str, &str)> = vec![
            (|c| c.data = "no-such-source".into(), "data", "expected"),
            (|c| c.held_out = "nope".into(), "held_out", "fraction"),
            (|c| c.held_out_fraction = 1.0, "held_out_fraction", "(0, 1)"),
            (|c| c.channels = 2, "channels", "expected 1"),
            (
                |c| c.block_out_channels = vec![],
                "block_out_channels",
                "at least one",
            ),
            (
                |c| c.block_out_channels = vec![16, 20],
                "block_out_channels",
                "norm_num_groups",
            ),
            (|c| c.resolution = 30, "resolution", "multiple of 4"),
            (|c| c.latent_channels = 0, "latent_channels", "at least 1"),
            (|c| c.steps = 0, "steps", "at least 1"),
            (|c| c.batch_size = 0, "batch_size", "at least 1"),
            (|c| c.learning_rate = -1.0, "learning_rate", "positive"),
            (|c| c.kl_weight = f64::NAN, "kl_weight", ">= 0"),
            (|c| c.perceptual_weight = -0.5, "perceptual_weight", ">= 0"),
            (
                |c| {
                    c.adversarial_weight = 0.5;
                    c.disc_layers = 4;
                },
                "disc_layers",
                "fewer layers",
            ),
            (
                |c| {
                    c.data = "cifar10:/nonexistent".into();
                    c.perceptual_weight = 0.1;
                },
                "perceptual_weight",
                "no bundled classifier",
            ),
        ];
        for (edit, key, words) in cases {
            let err = err_of(edit);
            assert!(
                err.starts_with(&format!("invalid setting {key}:")) && err.contains(words),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr_from_mse(0.0), f64::INFINITY);
        assert!((psnr_from_mse(0.01) - 20.0).abs() < 1e-12);
        assert!((psnr_from_mse(1.0)).abs() < 1e-12);
        let a = Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu));
        // identical images: the cap, not infinity
        assert_eq!(mean_psnr(&a, &a).unwrap(), PSNR_CAP_DB);
        // a constant error of 0.1 is an MSE of 0.01: 20 dB
        let b = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let c = &b + 0.1;
        let p = psnr_per_image(&b, &c).unwrap();
        assert!(p.iter().all(|v| (v - 20.0).abs() < 1e-5), "{p:?}");
        // per image, then the mean: 20 dB and 40 dB average to 30 dB
        let d = Tensor::cat(
            &[b.get(0).unsqueeze(0) + 0.1, b.get(1).unsqueeze(0) + 0.01],
            0,
        );
        assert!((mean_psnr(&b, &d).unwrap() - 30.0).abs() < 1e-4);
        assert!(psnr_per_image(&b, &a).is_err());
        // [-1, 1] to [0, 1]
        let x = Tensor::from_slice(&[-1.5f32, -1.0, 0.0, 1.0]).view([1, 1, 2, 2]);
        let u: Vec<f32> = Vec::try_from(to_unit_range(&x).flatten(0, -1)).unwrap();
        assert_eq!(u, [0.0, 0.0, 0.5, 1.0]);
    }

    #[test]
    fn bilinear_baselines_on_known_images() {
        // A constant image survives any round trip; a smooth one nearly.
        let flat = Tensor::full([2, 1, 32, 32], 0.3, (Kind::Float, Device::Cpu));
        let back = bilinear_round_trip(&flat, 8, 8).unwrap();
        assert!(back.allclose(&flat, 1e-6, 1e-6, false));
        assert_eq!(mean_psnr(&back, &flat).unwrap(), PSNR_CAP_DB);
        // A one-pixel checkerboard averages to grey at half the size (away
        // from the borders, where the filter is cut): MSE 0.25, 6.02 dB.
        let checker = Tensor::from_slice(
            &(0..256)
                .map(|i| ((i / 16 + i % 16) % 2) as f32)
                .collect::<Vec<_>>(),
        )
        .view([1, 1, 16, 16]);
        let inner = |t: &Tensor| t.narrow(2, 4, 8).narrow(3, 4, 8);
        let grey = inner(&bilinear_round_trip(&checker, 8, 8).unwrap());
        assert!(grey.allclose(&(grey.ones_like() * 0.5), 1e-5, 1e-5, false));
        let p = mean_psnr(&grey, &inner(&checker)).unwrap();
        assert!((p - psnr_from_mse(0.25)).abs() < 1e-4, "{p}");
        assert!((psnr_from_mse(0.25) - 6.0206).abs() < 1e-4);
        // As many pixels as the latent has values.
        assert_eq!(equal_values_size(4 * 8 * 8, 1, 32, 32), (16, 16));
        assert_eq!(equal_values_size(4 * 7 * 7, 1, 28, 28), (14, 14));
        assert_eq!(equal_values_size(4 * 8 * 8, 3, 32, 32), (9, 9));
        assert_eq!(equal_values_size(4 * 4 * 8, 1, 32, 64), (8, 16));
        assert!(bilinear_round_trip(&flat, 0, 8).is_err());
    }

    #[test]
    fn shuffles_are_seeded_permutations() {
        let a = shuffled(100, 7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<i64>>());
        assert_eq!(a, shuffled(100, 7));
        assert_ne!(a, shuffled(100, 8));
    }

    #[test]
    fn the_discriminator_gives_patch_logits_and_a_hinge_loss() {
        tch::manual_seed(0);
        let d = PatchDiscriminator::new(1, 8, 2, Device::Cpu);
        let x = Tensor::rand([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        assert_eq!(d.forward_t(&x, true).size(), [2, 1, 6, 6]);
        let real = Tensor::from_slice(&[2.0f32, 0.0]);
        let fake = Tensor::from_slice(&[-2.0f32, 0.5]);
        // real: relu(1 - 2) = 0, relu(1 - 0) = 1 -> 0.5; fake: 0, 1.5 -> 0.75
        let l = hinge_d_loss(&real, &fake).double_value(&[]);
        assert!((l - 0.625).abs() < 1e-6, "{l}");
    }
}
