//! The encoder, the decoder and the posterior of the VAE, as diffusers'
//! `autoencoders/vae.py` defines them: [`Encoder`], [`Decoder`] and
//! [`DiagonalGaussianDistribution`].
//!
//! ```text
//! Encoder: conv_in -> DownEncoderBlock2D per level (each but the last halves
//!          the resolution) -> mid block (ResNet, attention, ResNet)
//!          -> GroupNorm -> SiLU -> conv_out (2 * latent_channels: mean, logvar)
//! Decoder: conv_in -> mid block -> UpDecoderBlock2D per level, deepest
//!          first (each but the last doubles the resolution)
//!          -> GroupNorm -> SiLU -> conv_out
//! ```
//!
//! Every norm of the VAE uses eps = 1e-6; the mid-block attention is one
//! head over all channels with a GroupNorm in front.

use tch::{nn, nn::Module, Kind, Tensor};
use unet::attention::Attention;
use unet::config::TimeScaleShift;
use unet::layers;
use unet::unet_2d_blocks::{MidBlockConfig, UNetMidBlock2D};

use crate::unet_2d_blocks::{BlockConfig, DownEncoderBlock2D, UpDecoderBlock2D};
use crate::{Error, Result, VaeConfig};

/// The epsilon of every GroupNorm of the VAE.
pub const NORM_EPS: f64 = 1e-6;

fn mid_block(vs: nn::Path<'_>, cfg: &VaeConfig) -> Result<UNetMidBlock2D> {
    let c = *cfg
        .block_out_channels
        .last()
        .ok_or_else(|| Error::InvalidConfig("`block_out_channels` is empty".into()))?;
    Ok(UNetMidBlock2D::new(
        vs,
        &MidBlockConfig {
            channels: c,
            temb_channels: None,
            groups: cfg.norm_num_groups,
            attn_groups: Some(cfg.norm_num_groups),
            eps: NORM_EPS,
            dropout: 0.0,
            act: cfg.activation()?,
            time_scale_shift: TimeScaleShift::Default,
            output_scale_factor: 1.0,
            add_attention: cfg.mid_block_add_attention,
            heads: 1,
            dim_head: c,
        },
    ))
}

/// The mid block's attention, if it has one.
fn mid_attention(mid: &UNetMidBlock2D) -> Option<&Attention> {
    mid.attentions.first()
}

/// diffusers' `Encoder` with `double_z=True`: images to the moments (mean
/// and log-variance) of the latent posterior.
#[derive(Debug)]
pub struct Encoder {
    pub conv_in: nn::Conv2D,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: UNetMidBlock2D,
    pub conv_norm_out: nn::GroupNorm,
    pub conv_out: nn::Conv2D,
}

impl Encoder {
    pub fn new(vs: nn::Path<'_>, cfg: &VaeConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let act = cfg.activation()?;
        let levels = ch.len();
        let mut down_blocks = Vec::with_capacity(levels);
        let mut prev = ch[0];
        for (i, &out) in ch.iter().enumerate() {
            down_blocks.push(DownEncoderBlock2D::new(
                &vs / "down_blocks" / i,
                &BlockConfig {
                    in_channels: prev,
                    out_channels: out,
                    num_layers: cfg.layers_per_block,
                    groups: cfg.norm_num_groups,
                    eps: NORM_EPS,
                    act,
                    add_resample: i + 1 < levels,
                },
            ));
            prev = out;
        }
        let last = ch[levels - 1];
        Ok(Encoder {
            conv_in: layers::conv2d(&vs / "conv_in", cfg.in_channels, ch[0], 3, 1, 1),
            down_blocks,
            mid_block: mid_block(&vs / "mid_block", cfg)?,
            conv_norm_out: layers::group_norm(
                &vs / "conv_norm_out",
                cfg.norm_num_groups,
                last,
                NORM_EPS,
            ),
            conv_out: layers::conv2d(&vs / "conv_out", last, 2 * cfg.latent_channels, 3, 1, 1),
        })
    }

    /// `[N, in_channels, H, W]` -> `[N, 2 * latent_channels, H / f, W / f]`.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv_in.forward(xs);
        for block in &self.down_blocks {
            h = block.forward_t(&h, train);
        }
        h = self.mid_block.forward_t(&h, None, train);
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }

    /// Whether the mid block has attention.
    pub fn has_attention(&self) -> bool {
        mid_attention(&self.mid_block).is_some()
    }
}

/// diffusers' `Decoder` with `norm_type="group"`: latents to images.
#[derive(Debug)]
pub struct Decoder {
    pub conv_in: nn::Conv2D,
    pub mid_block: UNetMidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: nn::GroupNorm,
    pub conv_out: nn::Conv2D,
}

impl Decoder {
    pub fn new(vs: nn::Path<'_>, cfg: &VaeConfig) -> Result<Self> {
        let reversed: Vec<i64> = cfg.block_out_channels.iter().rev().copied().collect();
        let act = cfg.activation()?;
        let levels = reversed.len();
        let mut up_blocks = Vec::with_capacity(levels);
        let mut prev = reversed[0];
        for (i, &out) in reversed.iter().enumerate() {
            up_blocks.push(UpDecoderBlock2D::new(
                &vs / "up_blocks" / i,
                &BlockConfig {
                    in_channels: prev,
                    out_channels: out,
                    num_layers: cfg.layers_per_block + 1,
                    groups: cfg.norm_num_groups,
                    eps: NORM_EPS,
                    act,
                    add_resample: i + 1 < levels,
                },
            ));
            prev = out;
        }
        let first = cfg.block_out_channels[0];
        Ok(Decoder {
            conv_in: layers::conv2d(&vs / "conv_in", cfg.latent_channels, reversed[0], 3, 1, 1),
            mid_block: mid_block(&vs / "mid_block", cfg)?,
            up_blocks,
            conv_norm_out: layers::group_norm(
                &vs / "conv_norm_out",
                cfg.norm_num_groups,
                first,
                NORM_EPS,
            ),
            conv_out: layers::conv2d(&vs / "conv_out", first, cfg.out_channels, 3, 1, 1),
        })
    }

    /// `[N, latent_channels, h, w]` -> `[N, out_channels, h * f, w * f]`.
    pub fn forward_t(&self, zs: &Tensor, train: bool) -> Tensor {
        let mut h = self.conv_in.forward(zs);
        h = self.mid_block.forward_t(&h, None, train);
        for block in &self.up_blocks {
            h = block.forward_t(&h, train);
        }
        self.conv_out
            .forward(&self.conv_norm_out.forward(&h).silu())
    }
}

/// The latent posterior q(z | x) the encoder predicts: a Gaussian with a
/// diagonal covariance, as diffusers' `DiagonalGaussianDistribution`. The
/// log-variance is clamped to [-30, 20].
#[derive(Debug)]
pub struct DiagonalGaussianDistribution {
    /// `[N, latent_channels, h, w]`.
    pub mean: Tensor,
    /// The clamped log-variance, same shape.
    pub logvar: Tensor,
    /// `exp(logvar / 2)`.
    pub std: Tensor,
}

impl DiagonalGaussianDistribution {
    /// The distribution of the moments `[N, 2 * C, h, w]` (mean channels
    /// first, then log-variance channels).
    pub fn new(moments: &Tensor) -> Result<Self> {
        let size = moments.size();
        if size.len() < 2 || size[1] % 2 != 0 {
            return Err(Error::Input(format!(
                "posterior moments must be [N, 2 * latent_channels, ..], got {size:?}"
            )));
        }
        let parts = moments.chunk(2, 1);
        let logvar = parts[1].clamp(-30.0, 20.0);
        let std = (&logvar * 0.5).exp();
        Ok(DiagonalGaussianDistribution {
            mean: parts[0].shallow_clone(),
            logvar,
            std,
        })
    }

    /// The variance `exp(logvar)`.
    pub fn var(&self) -> Tensor {
        self.logvar.exp()
    }

    /// The most likely latent: the mean (diffusers' `mode()`).
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }

    /// A latent drawn with the standard-normal `noise` (same shape as the
    /// mean): `mean + std * noise`.
    pub fn sample_with(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.size() != self.mean.size() {
            return Err(Error::Input(format!(
                "noise of shape {:?} for a posterior of shape {:?}",
                noise.size(),
                self.mean.size()
            )));
        }
        let noise = noise
            .f_to_kind(self.mean.kind())?
            .f_to_device(self.mean.device())?;
        Ok(&self.mean + &self.std * noise)
    }

    /// A latent drawn with noise from libtorch's global generator (on the
    /// CPU the draw of `torch.randn` after the same `torch.manual_seed`,
    /// as diffusers' `sample()` without a generator).
    pub fn sample(&self) -> Tensor {
        let noise = Tensor::randn(self.mean.size(), (self.mean.kind(), self.mean.device()));
        &self.mean + &self.std * noise
    }

    /// KL divergence to the standard normal, per sample (summed over
    /// channels, height and width): the VAE's regularisation loss.
    pub fn kl(&self) -> Tensor {
        let terms = self.mean.square() + self.var() - 1.0 - &self.logvar;
        terms.sum_dim_intlist([1i64, 2, 3].as_slice(), false, None::<Kind>) * 0.5
    }

    /// Negative log-likelihood of `sample` per sample (summed over
    /// channels, height and width).
    pub fn nll(&self, sample: &Tensor) -> Tensor {
        let log_two_pi = (2.0 * std::f64::consts::PI).ln();
        let terms = (sample - &self.mean).square() / self.var() + &self.logvar + log_two_pi;
        terms.sum_dim_intlist([1i64, 2, 3].as_slice(), false, None::<Kind>) * 0.5
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn posterior_splits_clamps_and_samples() {
        let mean = Tensor::from_slice(&[0.5f32, -1.0]).view([1, 2, 1, 1]);
        let logvar = Tensor::from_slice(&[-40.0f32, 2.0]).view([1, 2, 1, 1]);
        let d = DiagonalGaussianDistribution::new(&Tensor::cat(&[&mean, &logvar], 1)).unwrap();
        assert_eq!(d.mode(), mean);
        let lv: Vec<f32> = Vec::try_from(d.logvar.flatten(0, -1)).unwrap();
        assert_eq!(lv, [-30.0, 2.0]);
        let noise = Tensor::ones([1, 2, 1, 1], (Kind::Float, Device::Cpu));
        let z: Vec<f32> = Vec::try_from(d.sample_with(&noise).unwrap().flatten(0, -1)).unwrap();
        assert!((z[0] - (0.5 + (-15f32).exp())).abs() < 1e-7);
        assert!((z[1] - (-1.0 + 1f32.exp())).abs() < 1e-6);
        assert!(d.sample_with(&noise.view([1, 1, 2, 1])).is_err());
        assert!(DiagonalGaussianDistribution::new(&mean.narrow(1, 0, 1)).is_err());
        // KL of N(m, s^2) to N(0, 1): (m^2 + s^2 - 1 - ln s^2) / 2, summed.
        let kl = d.kl().double_value(&[0]);
        let want = 0.5 * ((0.25 + (-30f64).exp() - 1.0 + 30.0) + (1.0 + 2f64.exp() - 1.0 - 2.0));
        assert!((kl - want).abs() < 1e-4 * want, "{kl} vs {want}");
    }

    #[test]
    fn sampling_draws_around_the_mean() {
        let mean = Tensor::randn([2, 4, 3, 3], (Kind::Float, Device::Cpu));
        let tight = Tensor::full([2, 4, 3, 3], -30.0, (Kind::Float, Device::Cpu));
        let d = DiagonalGaussianDistribution::new(&Tensor::cat(&[&mean, &tight], 1)).unwrap();
        let z = d.sample();
        assert_eq!(z.size(), [2, 4, 3, 3]);
        assert!(z.allclose(&mean, 1e-5, 1e-5, false));
        let wide =
            DiagonalGaussianDistribution::new(&Tensor::cat(&[&mean, &tight.zeros_like()], 1))
                .unwrap();
        assert!(!wide.sample().allclose(&mean, 1e-2, 1e-2, false));
    }
}
