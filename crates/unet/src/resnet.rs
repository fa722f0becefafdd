//! diffusers' `ResnetBlock2D`: GroupNorm, activation, 3x3 conv, the time
//! embedding (added, or as scale and shift after the second norm), GroupNorm,
//! activation, dropout, 3x3 conv, plus a skip (a 1x1 conv `conv_shortcut`
//! when the channel count changes), divided by `output_scale_factor`.
//!
//! Built with `temb_channels: None` (diffusers' `temb_channels=None`, as the
//! VAE's blocks are) it has no `time_emb_proj` and takes no time embedding.
//!
//! With `up`/`down` (the `"resnet"` up/downsample types) the block resamples
//! both paths after the first activation: nearest x2, or 2x2 average pooling.

use tch::{nn, nn::Module, Tensor};

use crate::activations::Activation;
use crate::config::TimeScaleShift;
use crate::layers;
use crate::upsampling::upsample_nearest_2x;

/// Resampling inside a ResNet block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    None,
    /// Nearest-neighbour x2 (diffusers `up=True`).
    Up,
    /// 2x2 average pooling (diffusers `down=True`).
    Down,
}

/// Construction options of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetBlock2DConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Width of the time embedding; `None`: no time embedding (no
    /// `time_emb_proj`).
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    pub dropout: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub output_scale_factor: f64,
    pub resample: Resample,
}

/// A residual block, conditioned on the time embedding unless built without one.
#[derive(Debug)]
pub struct ResnetBlock2D {
    pub norm1: nn::GroupNorm,
    pub conv1: nn::Conv2D,
    pub time_emb_proj: Option<nn::Linear>,
    pub norm2: nn::GroupNorm,
    pub conv2: nn::Conv2D,
    pub conv_shortcut: Option<nn::Conv2D>,
    pub cfg: ResnetBlock2DConfig,
}

impl ResnetBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &ResnetBlock2DConfig) -> Self {
        let (cin, cout) = (cfg.in_channels, cfg.out_channels);
        let proj_out = match cfg.time_scale_shift {
            TimeScaleShift::Default => cout,
            TimeScaleShift::ScaleShift => 2 * cout,
        };
        ResnetBlock2D {
            norm1: layers::group_norm(&vs / "norm1", cfg.groups, cin, cfg.eps),
            conv1: layers::conv2d(&vs / "conv1", cin, cout, 3, 1, 1),
            time_emb_proj: cfg
                .temb_channels
                .map(|t| layers::linear(&vs / "time_emb_proj", t, proj_out)),
            norm2: layers::group_norm(&vs / "norm2", cfg.groups, cout, cfg.eps),
            conv2: layers::conv2d(&vs / "conv2", cout, cout, 3, 1, 1),
            conv_shortcut: (cin != cout)
                .then(|| layers::conv2d(&vs / "conv_shortcut", cin, cout, 1, 1, 0)),
            cfg: *cfg,
        }
    }

    fn resample(&self, xs: &Tensor) -> Tensor {
        match self.cfg.resample {
            Resample::None => xs.shallow_clone(),
            Resample::Up => upsample_nearest_2x(xs),
            Resample::Down => xs.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>),
        }
    }

    /// `xs: [N, in, H, W]`, `temb: [N, temb_channels]` -> `[N, out, H', W']`.
    /// `temb` is read only by a block with a `time_emb_proj`, and such a
    /// block needs it (panics without it, as diffusers fails).
    pub fn forward_t(&self, xs: &Tensor, temb: Option<&Tensor>, train: bool) -> Tensor {
        let act = self.cfg.act;
        let h = act.forward(&self.norm1.forward(xs));
        let (input, h) = match self.cfg.resample {
            Resample::None => (xs.shallow_clone(), h),
            _ => (self.resample(xs), self.resample(&h)),
        };
        let h = self.conv1.forward(&h);
        let temb = self.time_emb_proj.as_ref().map(|proj| {
            let temb = temb.expect("a ResnetBlock2D with a time_emb_proj needs the time embedding");
            proj.forward(&act.forward(temb)).unsqueeze(-1).unsqueeze(-1)
        });
        let h = match (self.cfg.time_scale_shift, temb) {
            (_, None) => self.norm2.forward(&h),
            (TimeScaleShift::Default, Some(temb)) => self.norm2.forward(&(h + temb)),
            (TimeScaleShift::ScaleShift, Some(temb)) => {
                let parts = temb.chunk(2, 1);
                self.norm2.forward(&h) * (1.0 + &parts[0]) + &parts[1]
            }
        };
        let h = act.forward(&h).dropout(self.cfg.dropout, train);
        let h = self.conv2.forward(&h);
        let input = match &self.conv_shortcut {
            Some(c) => c.forward(&input),
            None => input,
        };
        let out = input + h;
        if self.cfg.output_scale_factor == 1.0 {
            out
        } else {
            out / self.cfg.output_scale_factor
        }
    }

    /// Output side for an input side.
    pub fn out_side(&self, side: i64) -> i64 {
        match self.cfg.resample {
            Resample::None => side,
            Resample::Up => 2 * side,
            Resample::Down => side / 2,
        }
    }

    /// FLOPs for an `h x w` input, per sample.
    pub fn flops(&self, h: i64, w: i64) -> u64 {
        let (ho, wo) = (self.out_side(h), self.out_side(w));
        layers::conv_flops(&self.conv1, ho, wo)
            + self
                .time_emb_proj
                .as_ref()
                .map_or(0, |p| layers::linear_flops(p, 1))
            + layers::conv_flops(&self.conv2, ho, wo)
            + self
                .conv_shortcut
                .as_ref()
                .map_or(0, |c| layers::conv_flops(c, ho, wo))
    }
}
