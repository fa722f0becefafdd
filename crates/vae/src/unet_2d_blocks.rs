//! The blocks of the VAE, as diffusers' `unet_2d_blocks.py` defines them:
//! `DownEncoderBlock2D` and `UpDecoderBlock2D`. Both are ResNet blocks
//! without a time embedding followed by an optional resampler, built from
//! the `unet` crate's [`ResnetBlock2D`], [`Downsample2D`] and
//! [`Upsample2D`]; unlike the U-Net's blocks they keep no skip states. The
//! mid block is the U-Net's [`unet::unet_2d_blocks::UNetMidBlock2D`] built
//! without a time embedding.

use tch::{nn, Tensor};
use unet::activations::Activation;
use unet::config::TimeScaleShift;
use unet::downsampling::Downsample2D;
use unet::resnet::{Resample, ResnetBlock2D, ResnetBlock2DConfig};
use unet::upsampling::Upsample2D;

/// Options of a [`DownEncoderBlock2D`] or [`UpDecoderBlock2D`] (the
/// `get_down_block` / `get_up_block` arguments the VAE passes).
#[derive(Debug, Clone, Copy)]
pub struct BlockConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub num_layers: i64,
    pub groups: i64,
    pub eps: f64,
    pub act: Activation,
    /// Whether the block ends with a down/upsampler.
    pub add_resample: bool,
}

impl BlockConfig {
    fn resnets(&self, vs: &nn::Path<'_>) -> Vec<ResnetBlock2D> {
        (0..self.num_layers)
            .map(|i| {
                let cin = if i == 0 {
                    self.in_channels
                } else {
                    self.out_channels
                };
                ResnetBlock2D::new(
                    vs / "resnets" / i,
                    &ResnetBlock2DConfig {
                        in_channels: cin,
                        out_channels: self.out_channels,
                        temb_channels: None,
                        groups: self.groups,
                        eps: self.eps,
                        dropout: 0.0,
                        act: self.act,
                        time_scale_shift: TimeScaleShift::Default,
                        output_scale_factor: 1.0,
                        resample: Resample::None,
                    },
                )
            })
            .collect()
    }
}

/// diffusers' `DownEncoderBlock2D`: ResNet blocks, then a stride-2 conv
/// after zero padding of one row and column at the bottom and right
/// (`downsample_padding = 0`, as the VAE's encoder builds it).
#[derive(Debug)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        let c = cfg.out_channels;
        DownEncoderBlock2D {
            resnets: cfg.resnets(&vs),
            downsamplers: cfg
                .add_resample
                .then(|| Downsample2D::new(&vs / "downsamplers" / 0, c, c, 0)),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for r in &self.resnets {
            h = r.forward_t(&h, None, train);
        }
        match &self.downsamplers {
            Some(d) => d.forward(&h),
            None => h,
        }
    }
}

/// diffusers' `UpDecoderBlock2D`: ResNet blocks, then nearest x2 and a conv.
#[derive(Debug)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        let c = cfg.out_channels;
        UpDecoderBlock2D {
            resnets: cfg.resnets(&vs),
            upsamplers: cfg
                .add_resample
                .then(|| Upsample2D::new(&vs / "upsamplers" / 0, c, c)),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for r in &self.resnets {
            h = r.forward_t(&h, None, train);
        }
        match &self.upsamplers {
            Some(u) => u.forward(&h),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn blocks_resample_and_name_their_variables_as_diffusers() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = BlockConfig {
            in_channels: 8,
            out_channels: 16,
            num_layers: 2,
            groups: 4,
            eps: 1e-6,
            act: Activation::Silu,
            add_resample: true,
        };
        let down = DownEncoderBlock2D::new(vs.root() / "down", &cfg);
        let up = UpDecoderBlock2D::new(vs.root() / "up", &cfg);
        let x = Tensor::randn([1, 8, 6, 10], (Kind::Float, Device::Cpu));
        assert_eq!(down.forward_t(&x, false).size(), [1, 16, 3, 5]);
        assert_eq!(up.forward_t(&x, false).size(), [1, 16, 12, 20]);
        let names = vs.variables();
        for key in [
            "down.resnets.0.conv_shortcut.weight",
            "down.resnets.1.norm2.bias",
            "down.downsamplers.0.conv.weight",
            "up.upsamplers.0.conv.bias",
        ] {
            assert!(names.contains_key(key), "{key}");
        }
        assert!(!names.keys().any(|k| k.contains("time_emb_proj")));
        assert!(!names.contains_key("down.resnets.1.conv_shortcut.weight"));
    }
}
