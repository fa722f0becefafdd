//! diffusers' `Transformer2DModel` (continuous input) and the
//! `BasicTransformerBlock`s it runs: the cross-attention layers of Stable
//! Diffusion's U-Net.
//!
//! `Transformer2DModel`: GroupNorm (eps 1e-6), `proj_in` (a 1x1 conv, or a
//! linear layer on the tokens with `use_linear_projection`), the feature map
//! as `H * W` tokens through the blocks, `proj_out` back, plus the input.
//!
//! `BasicTransformerBlock` (LayerNorms, eps 1e-5): self-attention `attn1`
//! (attention over the context instead with `only_cross_attention`, without
//! the context's mask, as in diffusers),
//! cross-attention `attn2` over the context, and the GEGLU feed-forward
//! `ff`, each on the normed tokens (`norm1`, `norm2`, `norm3`) and added to
//! them.

use tch::{nn, nn::Module, Tensor};

use crate::cross_attention::{CrossAttention, CrossAttentionConfig};
use crate::feed_forward::FeedForward;
use crate::layers;

/// Construction options of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    pub channels: i64,
    pub heads: i64,
    pub dim_head: i64,
    pub num_layers: i64,
    pub context_dim: i64,
    pub groups: i64,
    pub linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
    pub dropout: f64,
}

/// One transformer layer over `[N, L, C]` tokens.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    pub norm1: nn::LayerNorm,
    pub attn1: CrossAttention,
    pub norm2: nn::LayerNorm,
    pub attn2: CrossAttention,
    pub norm3: nn::LayerNorm,
    pub ff: FeedForward,
    pub only_cross_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(vs: nn::Path<'_>, cfg: &Transformer2DConfig) -> Self {
        let dim = cfg.heads * cfg.dim_head;
        let attention = |context_dim| CrossAttentionConfig {
            query_dim: dim,
            context_dim,
            heads: cfg.heads,
            dim_head: cfg.dim_head,
            bias: false,
            upcast: cfg.upcast_attention,
        };
        let self_context = cfg.only_cross_attention.then_some(cfg.context_dim);
        BasicTransformerBlock {
            norm1: layers::layer_norm(&vs / "norm1", dim, 1e-5),
            attn1: CrossAttention::new(&vs / "attn1", &attention(self_context)),
            norm2: layers::layer_norm(&vs / "norm2", dim, 1e-5),
            attn2: CrossAttention::new(&vs / "attn2", &attention(Some(cfg.context_dim))),
            norm3: layers::layer_norm(&vs / "norm3", dim, 1e-5),
            ff: FeedForward::new(&vs / "ff", dim, 4 * dim, cfg.dropout),
            only_cross_attention: cfg.only_cross_attention,
        }
    }

    /// `xs` `[N, L, C]`, `context` `[N, S, context_dim]`, `bias` an additive
    /// context mask broadcasting to `[N, heads, L, S]`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        context: &Tensor,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let normed = self.norm1.forward(xs);
        let h = if self.only_cross_attention {
            // diffusers gives attn1 the self-attention mask (none), not the
            // context's, even when it attends to the context.
            self.attn1.forward(&normed, Some(context), None)
        } else {
            self.attn1.forward(&normed, None, None)
        } + xs;
        let h = self
            .attn2
            .forward(&self.norm2.forward(&h), Some(context), bias)
            + h;
        self.ff.forward_t(&self.norm3.forward(&h), train) + h
    }

    /// FLOPs for `l` tokens over `s` context tokens, per sample.
    pub fn flops(&self, l: i64, s: i64) -> u64 {
        let self_s = if self.only_cross_attention { s } else { l };
        self.attn1.flops(l, self_s) + self.attn2.flops(l, s) + self.ff.flops(l)
    }
}

/// How the feature map enters and leaves the token space.
#[derive(Debug)]
pub enum Projection {
    /// 1x1 convolutions on the map.
    Conv(nn::Conv2D),
    /// Linear layers on the tokens (`use_linear_projection`).
    Linear(nn::Linear),
}

impl Projection {
    fn new(vs: nn::Path<'_>, cin: i64, cout: i64, linear: bool) -> Self {
        if linear {
            Projection::Linear(layers::linear(vs, cin, cout))
        } else {
            Projection::Conv(layers::conv2d(vs, cin, cout, 1, 1, 0))
        }
    }

    fn flops(&self, tokens: i64) -> u64 {
        match self {
            Projection::Conv(c) => layers::conv_flops(c, tokens, 1),
            Projection::Linear(l) => layers::linear_flops(l, tokens),
        }
    }
}

/// Transformer layers over the positions of a feature map, with a residual.
#[derive(Debug)]
pub struct Transformer2DModel {
    pub norm: nn::GroupNorm,
    pub proj_in: Projection,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(vs: nn::Path<'_>, cfg: &Transformer2DConfig) -> Self {
        let (c, inner) = (cfg.channels, cfg.heads * cfg.dim_head);
        Transformer2DModel {
            norm: layers::group_norm(&vs / "norm", cfg.groups, c, 1e-6),
            proj_in: Projection::new(&vs / "proj_in", c, inner, cfg.linear_projection),
            transformer_blocks: (0..cfg.num_layers)
                .map(|i| BasicTransformerBlock::new(&vs / "transformer_blocks" / i, cfg))
                .collect(),
            proj_out: Projection::new(&vs / "proj_out", inner, c, cfg.linear_projection),
        }
    }

    /// `[N, C, H, W]` attending to `context` `[N, S, context_dim]` ->
    /// `[N, C, H, W]`.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        context: &Tensor,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let (n, _, h, w) = xs.size4().expect("transformer input must be [N, C, H, W]");
        let normed = self.norm.forward(xs);
        let to_tokens = |t: &Tensor| {
            let inner = t.size()[1];
            t.permute([0, 2, 3, 1]).reshape([n, h * w, inner])
        };
        let mut tokens = match &self.proj_in {
            Projection::Conv(c) => to_tokens(&c.forward(&normed)),
            Projection::Linear(l) => l.forward(&to_tokens(&normed)),
        };
        for block in &self.transformer_blocks {
            tokens = block.forward_t(&tokens, context, bias, train);
        }
        let to_map = |t: &Tensor| {
            let inner = t.size()[2];
            t.reshape([n, h, w, inner])
                .permute([0, 3, 1, 2])
                .contiguous()
        };
        let out = match &self.proj_out {
            Projection::Conv(c) => c.forward(&to_map(&tokens)),
            Projection::Linear(l) => to_map(&l.forward(&tokens)),
        };
        out + xs
    }

    /// FLOPs over an `h x w` map with `s` context tokens, per sample.
    pub fn flops(&self, h: i64, w: i64, s: i64) -> u64 {
        let l = h * w;
        self.proj_in.flops(l)
            + self
                .transformer_blocks
                .iter()
                .map(|b| b.flops(l, s))
                .sum::<u64>()
            + self.proj_out.flops(l)
    }
}
