//! The cross-attention blocks of `UNet2DConditionModel`, as diffusers'
//! `unet_2d_blocks.py` defines them: `CrossAttnDownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`. Each wraps the plain
//! block of [`crate::unet_2d_blocks`]: the same ResNets and resamplers, with
//! a [`Transformer2DModel`] after every ResNet that attends to the context
//! (the text embeddings).

use tch::{nn, Tensor};

use crate::downsampling::Downsample2D;
use crate::resnet::{Resample, ResnetBlock2D, ResnetBlock2DConfig};
use crate::transformer_2d::{Transformer2DConfig, Transformer2DModel};
use crate::unet_2d_blocks::{
    cat_skip, down_resnets, up_resnets, BlockConfig, DownBlock2D, UpBlock2D,
};
use crate::upsampling::Upsample2D;

/// What the transformers of a block attend to: the context `[N, S, D]` and
/// an optional additive mask broadcasting to `[N, heads, L, S]`.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub states: &'a Tensor,
    pub bias: Option<&'a Tensor>,
}

fn transformers(vs: &nn::Path<'_>, n: i64, cfg: &Transformer2DConfig) -> Vec<Transformer2DModel> {
    (0..n)
        .map(|i| Transformer2DModel::new(vs / "attentions" / i, cfg))
        .collect()
}

/// diffusers' `CrossAttnDownBlock2D`: ResNets each followed by a
/// transformer, and a conv downsampler.
#[derive(Debug)]
pub struct CrossAttnDownBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub downsamplers: Option<Downsample2D>,
}

impl CrossAttnDownBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig, attn: &Transformer2DConfig) -> Self {
        CrossAttnDownBlock2D {
            resnets: down_resnets(&vs, cfg),
            attentions: transformers(&vs, cfg.num_layers, attn),
            downsamplers: cfg.add_resample.then(|| {
                let c = cfg.out_channels;
                Downsample2D::new(&vs / "downsamplers" / 0, c, c, cfg.downsample_padding)
            }),
        }
    }

    /// Returns the output and the states for the skip stack.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        ctx: Context<'_>,
        train: bool,
    ) -> (Tensor, Vec<Tensor>) {
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        let mut h = xs.shallow_clone();
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            h = a.forward_t(
                &r.forward_t(&h, Some(temb), train),
                ctx.states,
                ctx.bias,
                train,
            );
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsamplers {
            h = d.forward(&h);
            states.push(h.shallow_clone());
        }
        (h, states)
    }

    /// FLOPs for an `h x w` input and `s` context tokens, per sample, and
    /// the output side.
    pub fn flops(&self, h: i64, w: i64, s: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self
            .resnets
            .iter()
            .zip(&self.attentions)
            .map(|(r, a)| r.flops(h, w) + a.flops(h, w, s))
            .sum();
        let mut hw = (h, w);
        if let Some(d) = &self.downsamplers {
            f += d.flops(h, w);
            hw = (d.out_side(h), d.out_side(w));
        }
        (f, hw)
    }
}

/// diffusers' `UNetMidBlock2DCrossAttn` (one layer, as the U-Net builds
/// it): ResNet, transformer, ResNet.
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    /// `cfg.out_channels` channels; `cfg.num_layers` transformers (and one
    /// more ResNet), the ResNets' outputs divided by `output_scale_factor`
    /// (`mid_block_scale_factor`).
    pub fn new(
        vs: nn::Path<'_>,
        cfg: &BlockConfig,
        attn: &Transformer2DConfig,
        output_scale_factor: f64,
    ) -> Self {
        let c = cfg.out_channels;
        let resnet = ResnetBlock2DConfig {
            output_scale_factor,
            ..cfg.resnet(c, c, Resample::None)
        };
        UNetMidBlock2DCrossAttn {
            resnets: (0..=cfg.num_layers)
                .map(|i| ResnetBlock2D::new(&vs / "resnets" / i, &resnet))
                .collect(),
            attentions: transformers(&vs, cfg.num_layers, attn),
        }
    }

    pub fn forward_t(&self, xs: &Tensor, temb: &Tensor, ctx: Context<'_>, train: bool) -> Tensor {
        let mut h = self.resnets[0].forward_t(xs, Some(temb), train);
        for (a, r) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = r.forward_t(
                &a.forward_t(&h, ctx.states, ctx.bias, train),
                Some(temb),
                train,
            );
        }
        h
    }

    /// FLOPs for an `h x w` input and `s` context tokens, per sample.
    pub fn flops(&self, h: i64, w: i64, s: i64) -> u64 {
        self.resnets.iter().map(|r| r.flops(h, w)).sum::<u64>()
            + self
                .attentions
                .iter()
                .map(|a| a.flops(h, w, s))
                .sum::<u64>()
    }
}

/// diffusers' `CrossAttnUpBlock2D`: ResNets on `[state, skip]` each
/// followed by a transformer, and a conv upsampler.
#[derive(Debug)]
pub struct CrossAttnUpBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub upsamplers: Option<Upsample2D>,
}

impl CrossAttnUpBlock2D {
    pub fn new(vs: nn::Path<'_>, cfg: &BlockConfig, attn: &Transformer2DConfig) -> Self {
        CrossAttnUpBlock2D {
            resnets: up_resnets(&vs, cfg),
            attentions: transformers(&vs, cfg.num_layers, attn),
            upsamplers: cfg.add_resample.then(|| {
                let c = cfg.out_channels;
                Upsample2D::new(&vs / "upsamplers" / 0, c, c)
            }),
        }
    }

    /// Consumes one skip state per ResNet block from the end of `skips`;
    /// upsamples to `size` when given (see [`Upsample2D::forward_to`]).
    pub fn forward_t(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        ctx: Context<'_>,
        train: bool,
        size: Option<[i64; 2]>,
    ) -> Tensor {
        let mut h = xs.shallow_clone();
        for (r, a) in self.resnets.iter().zip(&self.attentions) {
            let out = r.forward_t(&cat_skip(&h, skips), Some(temb), train);
            h = a.forward_t(&out, ctx.states, ctx.bias, train);
        }
        match &self.upsamplers {
            Some(u) => u.forward_to(&h, size),
            None => h,
        }
    }

    /// FLOPs for an `h x w` input and `s` context tokens, per sample, and
    /// the output side.
    pub fn flops(&self, h: i64, w: i64, s: i64) -> (u64, (i64, i64)) {
        let mut f: u64 = self
            .resnets
            .iter()
            .zip(&self.attentions)
            .map(|(r, a)| r.flops(h, w) + a.flops(h, w, s))
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

/// A down block of a `UNet2DConditionModel`.
#[derive(Debug)]
pub enum CondDownBlock {
    Down(DownBlock2D),
    CrossAttnDown(Box<CrossAttnDownBlock2D>),
}

impl CondDownBlock {
    pub fn forward_t(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        ctx: Context<'_>,
        train: bool,
    ) -> (Tensor, Vec<Tensor>) {
        match self {
            CondDownBlock::Down(b) => b.forward_t(xs, temb, train),
            CondDownBlock::CrossAttnDown(b) => b.forward_t(xs, temb, ctx, train),
        }
    }

    pub fn flops(&self, h: i64, w: i64, s: i64) -> (u64, (i64, i64)) {
        match self {
            CondDownBlock::Down(b) => b.flops(h, w),
            CondDownBlock::CrossAttnDown(b) => b.flops(h, w, s),
        }
    }
}

/// An up block of a `UNet2DConditionModel`.
#[derive(Debug)]
pub enum CondUpBlock {
    Up(UpBlock2D),
    CrossAttnUp(Box<CrossAttnUpBlock2D>),
}

impl CondUpBlock {
    /// The number of skip states the block consumes.
    pub fn num_resnets(&self) -> usize {
        match self {
            CondUpBlock::Up(b) => b.resnets.len(),
            CondUpBlock::CrossAttnUp(b) => b.resnets.len(),
        }
    }

    pub fn forward_t(
        &self,
        xs: &Tensor,
        skips: &mut Vec<Tensor>,
        temb: &Tensor,
        ctx: Context<'_>,
        train: bool,
        size: Option<[i64; 2]>,
    ) -> Tensor {
        match self {
            CondUpBlock::Up(b) => b.forward_sized(xs, skips, temb, train, size),
            CondUpBlock::CrossAttnUp(b) => b.forward_t(xs, skips, temb, ctx, train, size),
        }
    }

    pub fn flops(&self, h: i64, w: i64, s: i64) -> (u64, (i64, i64)) {
        match self {
            CondUpBlock::Up(b) => b.flops(h, w),
            CondUpBlock::CrossAttnUp(b) => b.flops(h, w, s),
        }
    }
}
