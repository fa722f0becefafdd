//! diffusers' `Upsample2D` with `use_conv=True`: nearest-neighbour x2
//! (`F.interpolate(scale_factor=2.0, mode="nearest")`) then a 3x3 conv
//! (variable `conv`).

use tch::{nn, nn::Module, Tensor};

use crate::layers;

/// Nearest-neighbour doubling of the last two dimensions of `[N, C, H, W]`.
pub fn upsample_nearest_2x(xs: &Tensor) -> Tensor {
    let (h, w) = (xs.size()[2], xs.size()[3]);
    xs.upsample_nearest2d([2 * h, 2 * w], Some(2.0), Some(2.0))
}

/// Doubles the resolution, then convolves.
#[derive(Debug)]
pub struct Upsample2D {
    pub conv: nn::Conv2D,
}

impl Upsample2D {
    pub fn new(vs: nn::Path<'_>, channels: i64, out_channels: i64) -> Self {
        Upsample2D {
            conv: layers::conv2d(&vs / "conv", channels, out_channels, 3, 1, 1),
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.conv.forward(&upsample_nearest_2x(xs))
    }

    /// Nearest-neighbour to `size` (`[H, W]`; doubling when `None`), then
    /// the conv: diffusers' `upsample_size`, used when the input of the
    /// U-Net is not a multiple of its downsampling factor.
    pub fn forward_to(&self, xs: &Tensor, size: Option<[i64; 2]>) -> Tensor {
        match size {
            None => self.forward(xs),
            Some(size) => self
                .conv
                .forward(&xs.upsample_nearest2d(size, None::<f64>, None::<f64>)),
        }
    }

    /// FLOPs for an `h x w` input (the conv runs at `2h x 2w`), per sample.
    pub fn flops(&self, h: i64, w: i64) -> u64 {
        layers::conv_flops(&self.conv, 2 * h, 2 * w)
    }
}
