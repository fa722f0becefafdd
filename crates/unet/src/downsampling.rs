//! diffusers' `Downsample2D` with `use_conv=True`: a 3x3 stride-2 conv
//! (variable `conv`). With `padding = 0` the input is first padded by one
//! row and column at the bottom and right, as diffusers (and the original
//! DDPM) do.

use tch::{nn, nn::Module, Tensor};

use crate::layers;

/// Halves the resolution with a stride-2 convolution.
#[derive(Debug)]
pub struct Downsample2D {
    pub conv: nn::Conv2D,
    pub padding: i64,
}

impl Downsample2D {
    pub fn new(vs: nn::Path<'_>, channels: i64, out_channels: i64, padding: i64) -> Self {
        Downsample2D {
            conv: layers::conv2d(&vs / "conv", channels, out_channels, 3, 2, padding),
            padding,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        if self.padding == 0 {
            self.conv.forward(&xs.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(xs)
        }
    }

    /// Output side for an input side.
    pub fn out_side(&self, side: i64) -> i64 {
        let extra = i64::from(self.padding == 0);
        layers::conv_out_side(side, 3, 2, self.padding, self.padding + extra)
    }

    /// FLOPs for an `h x w` input, per sample.
    pub fn flops(&self, h: i64, w: i64) -> u64 {
        layers::conv_flops(&self.conv, self.out_side(h), self.out_side(w))
    }
}
