//! The blocks of `UNet2DModel`, as diffusers' `unet_2d_blocks.py` defines
//! them: `DownBlock2D`, `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D`,
//! `AttnUpBlock2D`.
//!
//! A down block runs `num_layers` ResNet blocks (each followed by attention
//! in the `Attn` variant) and an optional downsampler, and hands every
//! intermediate state to the skip stack. An up block runs `num_layers`
//! ResNet blocks (one more than down, in `UNet2DModel`), each on its input
//! concatenated with the state popped off the skip stack, then an optional
//! upsampler.

use tch::{nn, Tensor};

use crate::activations::Activation;
use crate::attention::{Attention, AttentionConfig};
use crate::config::TimeScaleShift;
use crate::downsampling::Downsample2D;
use crate::resnet::{Resample, ResnetBlock2D, ResnetBlock2DConfig};
use crate::upsampling::Upsample2D;

/// Options shared by the blocks (the `get_down_block` / `get_up_block`
/// arguments of diffusers).
#[derive(Debug, Clone, Copy)]
pub struct BlockConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Channels coming from the previous (lower-resolution) up block; up blocks only.
    pub prev_output_channels: i64,
    pub temb_channels: i64,
    pub num_layers: i64,
    pub groups: i64,
    pub eps: f64,
    pub dropout: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    /// Whether the block ends with a down/upsampler.
    pub add_resample: bool,
    /// `downsample_type` / `upsample_type` is `"resnet"` (used by the `Attn` blocks only).
    pub resnet_resample: bool,
    pub downsample_padding: i64,
    /// Heads and channels per head of the attention layers.
    pub heads: i64,
    pub dim_head: i64,
}

impl BlockConfig {
    pub(crate) fn resnet(&self, cin: i64, cout: i64, resample: Resample) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            dropout: self.dropout,
            act: self.act,
            time_scale_shift: self.time_scale_shift,
            output_scale_factor: 1.0,
            resample,
        }
    }

    fn attention(&self, channels: i64) -> AttentionConfig {
        AttentionConfig {
            channels,
            heads: self.heads,
            dim_head: self.dim_head,
            norm_groups: Some(self.groups),
            eps: self.eps,
            rescale_output_factor: 1.0,
        }
    }
}

/// The downsampler of a down block: a stride-2 conv, or a ResNet block with
/// average pooling (`downsample_type = "resnet"`).
#[derive(Debug)]
pub enum Downsampler {
    Conv(Downsample2D),
    Resnet(Box<ResnetBlock2D>),
}

impl Downsampler {
    fn new(vs: nn::Path<'_>, cfg: &BlockConfig, resnet: bool) -> Self {
        let c = cfg.out_channels;
        if resnet {
            Downsampler::Resnet(Box::new(ResnetBlock2D::new(
                vs,
                &cfg.resnet(c, c, Resample::Down),
            )))
        } else {
            Downsampler::Conv(Downsample2D::new(vs, c, c, cfg.downsample_padding))
        }
    }

    fn forward_t(&self, xs: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        match self {
            Downsampler::Conv(d) => d.forward(xs),
            Downsampler::Resnet(r) => r.forward_t(xs, Some(temb), train),
        }
    }

    fn out_side(&self, side: i64) -> i64 {
        match self {
            Downsampler::Conv(d) => d.out_side(side),
            Downsampler::Resnet(r) => r.out_side(side),
        }
    }

    fn flops(&self, h: i64, w: i64) -> u64 {
        match self {
            Downsampler::Conv(d) => d.flops(h, w),
            Downsampler::Resnet(r) => r.flops(h, w),
        }
    }
}

/// The upsampler of an up block: nearest x2 and a conv, or a ResNet block
/// with nearest x2 (`upsample_type = "resnet"`).
#[derive(Debug)]
pub enum Upsampler {
    Conv(Upsample2D),
    Resnet(Box<ResnetBlock2D>),
}

impl Upsampler {
    fn new(vs: nn::Path<'_>, cfg: &BlockConfig, resnet: bool) -> Self {
        let c = cfg.out_channels;
        if resnet {
            Upsampler::Resnet(Box::new(ResnetBlock2D::new(
                vs,
                &cfg.resnet(c, c, Resample::Up),
            )))
        } else {
            Upsampler::Conv(Upsample2D::new(vs, c, c))
        }
    }

    fn forward_t(&self, xs: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        match self {
            Upsampler::Conv(u) => u.forward(xs),
            Upsampler::Resnet(r) => r.forward_t(xs, Some(temb), train),
        }
    }

    fn flops(&self, h: i64, w: i64) -> u64 {
        match self {
            Upsampler::Conv(u) => u.flops(h, w),
            Upsampler::Resnet(r) => r.flops(h, w),
        }
    }
}

/// ResNet blocks of a down block: the first maps `in -> out` channels.
pub(crate) fn down_resnets(vs: &nn::Path<'_>, cfg: &BlockConfig) -> Vec<ResnetBlock2D> {
    (0..cfg.num_layers)
        .map(|i| {
            let cin = if i == 0 {
                cfg.in_channels
            } else {
                cfg.out_channels
            };
            ResnetBlock2D::new(
                vs / "resnets" / i,
                &cfg.resnet(cin, cfg.out_channels, Resample::None),
            )
        })
        .collect()
}

/// ResNet blocks of an up block: block `i` takes the running state
/// (`prev_output` channels for the first, `out` after) concatenated with a
/// skip (`in` channels for the last, `out` before).
pub(crate) fn up_resnets(vs: &nn::Path<'_>, cfg: &BlockConfig) -> Vec<ResnetBlock2D> {
    (0..cfg.num_layers)
        .map(|i| {
            let skip = if i == cfg.num_layers - 1 {
                cfg.in_channels
            } else {
                cfg.out_channels
            };
            let cin = if i == 0 {
                cfg.prev_output_channels
            } else {
                cfg.out_channels
            };
            ResnetBlock2D::new(
                vs / "resnets" / i,
                &cfg.resnet(cin + skip, cfg.out_channels, Resample::None),
            )
        })
        .collect()
}

/// Pops the latest skip state and concatenates it to `xs` on channels.
pub(crate) fn cat_skip(xs: &Tensor, skips: &mut Vec<Tensor>) -> Tensor {
    let skip = skips
        .pop()
        .expect("skip stack holds one state per up-block ResNet");
    Tensor::cat(&[xs, &skip], 1)
}

/// diffusers' `DownBlock2D`: ResNet blocks and a conv downsampler.
#[derive(Debug)]
pub struct DownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsamplers: Option<Downsample2D>,
}

impl DownBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        DownBlock2D {
            resnets: down_resnets(&vs, cfg),
            downsamplers: cfg.add_resample.then(|| {
                let c = cfg.out_channels;
                Downsample2D::new(&vs / "downsamplers" / 0, c, c, cfg.downsample_padding)
            }),
        }
    }

    /// Returns the output and the states for the skip stack.
    pub fn forward_t(&self, xs: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        let mut h = xs.shallow_clone();
        for r in &self.resnets {
            h = r.forward_t(&h, Some(temb), train);
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsamplers {
            h = d.forward(&h);
            states.push(h.shallow_clone());
        }
        (h, states)
    }

    /// FLOPs for an `h x w` input, per sample, and the output side.
    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self.resnets.iter().map(|r| r.flops(h, w)).sum();
        let mut hw = (h, w);
        if let Some(d) = &self.downsamplers {
            f += d.flops(h, w);
            hw = (d.out_side(h), d.out_side(w));
        }
        (f, hw)
    }
}

/// diffusers' `AttnDownBlock2D`: ResNet blocks each followed by attention,
/// and a downsampler (conv, or ResNet with `downsample_type = "resnet"`).
#[derive(Debug)]
pub struct AttnDownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub downsamplers: Option<Downsampler>,
}

impl AttnDownBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        AttnDownBlock2D {
            resnets: down_resnets(&vs, cfg),
            attentions: (0..cfg.num_layers)
                .map(|i| Attention::new(&vs / "attentions" / i, &cfg.attention(cfg.out_channels)))
                .collect(),
            downsamplers: cfg
                .add_resample
                .then(|| Downsampler::new(&vs / "downsamplers" / 0, cfg, cfg.resnet_resample)),
        }
    }

    /// Returns the output and the states for the skip stack.
    pub fn forward_t(&self, xs: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        let mut h = xs.shallow_clone();
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            h = a.forward(&r.forward_t(&h, Some(temb), train));
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsamplers {
            h = d.forward_t(&h, temb, train);
            states.push(h.shallow_clone());
        }
        (h, states)
    }

    /// FLOPs for an `h x w` input, per sample, and the output side.
    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self
            .resnets
            .iter()
            .zip(&self.attentions)
            .map(|(r, a)| r.flops(h, w) + a.flops(h, w))
            .sum();
        let mut hw = (h, w);
        if let Some(d) = &self.downsamplers {
            f += d.flops(h, w);
            hw = (d.out_side(h), d.out_side(w));
        }
        (f, hw)
    }
}

/// diffusers' `UNetMidBlock2D` (one layer, as `UNet2DModel` builds it):
/// ResNet, attention (unless `add_attention` is false), ResNet.
#[derive(Debug)]
pub struct UNetMidBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
}

/// Construction options of a [`UNetMidBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct MidBlockConfig {
    pub channels: i64,
    /// Width of the time embedding; `None`: the ResNets take none (the VAE's
    /// mid block).
    pub temb_channels: Option<i64>,
    pub groups: i64,
    /// Groups of the attention's GroupNorm; `None`: no norm.
    pub attn_groups: Option<i64>,
    pub eps: f64,
    pub dropout: f64,
    pub act: Activation,
    pub time_scale_shift: TimeScaleShift,
    pub output_scale_factor: f64,
    pub add_attention: bool,
    pub heads: i64,
    pub dim_head: i64,
}

impl UNetMidBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &MidBlockConfig) -> Self {
        let c = cfg.channels;
        let resnet = ResnetBlock2DConfig {
            in_channels: c,
            out_channels: c,
            temb_channels: cfg.temb_channels,
            groups: cfg.groups,
            eps: cfg.eps,
            dropout: cfg.dropout,
            act: cfg.act,
            time_scale_shift: cfg.time_scale_shift,
            output_scale_factor: cfg.output_scale_factor,
            resample: Resample::None,
        };
        let attention = AttentionConfig {
            channels: c,
            heads: cfg.heads,
            dim_head: cfg.dim_head,
            norm_groups: cfg.attn_groups,
            eps: cfg.eps,
            rescale_output_factor: cfg.output_scale_factor,
        };
        UNetMidBlock2D {
            resnets: (0..2)
                .map(|i| ResnetBlock2D::new(&vs / "resnets" / i, &resnet))
                .collect(),
            attentions: if cfg.add_attention {
                vec![Attention::new(&vs / "attentions" / 0, &attention)]
            } else {
                Vec::new()
            },
        }
    }

    /// `temb` is needed when the block was built with `temb_channels`.
    pub fn forward_t(&self, xs: &Tensor, temb: Option<&Tensor>, train: bool) -> Tensor {
        let mut h = self.resnets[0].forward_t(xs, temb, train);
        if let Some(a) = self.attentions.first() {
            h = a.forward(&h);
        }
        self.resnets[1].forward_t(&h, temb, train)
    }

    /// FLOPs for an `h x w` input, per sample.
    pub fn flops(&self, h: i64, w: i64) -> u64 {
        self.resnets.iter().map(|r| r.flops(h, w)).sum::<u64>()
            + self.attentions.iter().map(|a| a.flops(h, w)).sum::<u64>()
    }
}

/// diffusers' `UpBlock2D`: ResNet blocks on `[state, skip]` and a conv upsampler.
#[derive(Debug)]
pub struct UpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsamplers: Option<Upsample2D>,
}

impl UpBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        UpBlock2D {
            resnets: up_resnets(&vs, cfg),
            upsamplers: cfg.add_resample.then(|| {
                let c = cfg.out_channels;
                Upsample2D::new(&vs / "upsamplers" / 0, c, c)
            }),
        }
    }

    /// Consumes one skip state per ResNet block from the end of `skips`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
    ) -> Tensor {
        self.forward_sized(xs, skips, temb, train, None)
    }

    /// [`UpBlock2D::forward_t`] upsampling to `size` (see
    /// [`Upsample2D::forward_to`]).
    pub fn forward_sized(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
        size: Option<[i64; 2]>,
    ) -> Tensor {
        let mut h = xs.shallow_clone();
        for r in &self.resnets {
            h = r.forward_t(&cat_skip(&h, skips), Some(temb), train);
        }
        match &self.upsamplers {
            Some(u) => u.forward_to(&h, size),
            None => h,
        }
    }

    /// FLOPs for an `h x w` input, per sample, and the output side.
    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self.resnets.iter().map(|r| r.flops(h, w)).sum();
        match &self.upsamplers {
            Some(u) => {
                f += u.flops(h, w);
                (f, (2 * h, 2 * w))
            }
            None => (f, (h, w)),
        }
    }
}

/// diffusers' `AttnUpBlock2D`: ResNet blocks on `[state, skip]` each
/// followed by attention, and an upsampler (conv, or ResNet with
/// `upsample_type = "resnet"`).
#[derive(Debug)]
pub struct AttnUpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Attention>,
    pub upsamplers: Option<Upsampler>,
}

impl AttnUpBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig) -> Self {
        AttnUpBlock2D {
            resnets: up_resnets(&vs, cfg),
            attentions: (0..cfg.num_layers)
                .map(|i| Attention::new(&vs / "attentions" / i, &cfg.attention(cfg.out_channels)))
                .collect(),
            upsamplers: cfg
                .add_resample
                .then(|| Upsampler::new(&vs / "upsamplers" / 0, cfg, cfg.resnet_resample)),
        }
    }

    /// Consumes one skip state per ResNet block from the end of `skips`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
    ) -> Tensor {
        let mut h = xs.shallow_clone();
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            h = a.forward(&r.forward_t(&cat_skip(&h, skips), Some(temb), train));
        }
        match &self.upsamplers {
            Some(u) => u.forward_t(&h, temb, train),
            None => h,
        }
    }

    /// FLOPs for an `h x w` input, per sample, and the output side.
    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self
            .resnets
            .iter()
            .zip(&self.attentions)
            .map(|(r, a)| r.flops(h, w) + a.flops(h, w))
            .sum();
        match &self.upsamplers {
            Some(u) => {
                f += u.flops(h, w);
                (f, (2 * h, 2 * w))
            }
            None => (f, (h, w)),
        }
    }
}

/// A down block of any supported type.
#[derive(Debug)]
pub enum DownBlock {
    Down(DownBlock2D),
    AttnDown(Box<AttnDownBlock2D>),
}

impl DownBlock {
    pub fn forward_t(&self, xs: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        match self {
            DownBlock::Down(b) => b.forward_t(xs, temb, train),
            DownBlock::AttnDown(b) => b.forward_t(xs, temb, train),
        }
    }

    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        match self {
            DownBlock::Down(b) => b.flops(h, w),
            DownBlock::AttnDown(b) => b.flops(h, w),
        }
    }
}

/// An up block of any supported type.
#[derive(Debug)]
pub enum UpBlock {
    Up(UpBlock2D),
    AttnUp(Box<AttnUpBlock2D>),
}

impl UpBlock {
    pub fn forward_t(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        train: bool,
    ) -> Tensor {
        match self {
            UpBlock::Up(b) => b.forward_t(xs, skips, temb, train),
            UpBlock::AttnUp(b) => b.forward_t(xs, skips, temb, train),
        }
    }

    pub fn flops(&self, h: i64, w: i64) -> (u64, (i64, i64)) {
        match self {
            UpBlock::Up(b) => b.flops(h, w),
            UpBlock::AttnUp(b) => b.flops(h, w),
        }
    }
}
