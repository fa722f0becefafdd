//! diffusers' `Attention` as the transformer blocks use it: multi-head
//! attention of a token sequence over itself (`attn1`) or over a context
//! such as text embeddings (`attn2`, cross-attention), without the norm and
//! residual of the spatial [`crate::attention::Attention`]. Variables are
//! named as in diffusers: `to_q`, `to_k`, `to_v` (biases only with
//! `attention_bias`, off in Stable Diffusion) and `to_out.0`.
//!
//! The product runs through `Tensor::scaled_dot_product_attention` with the
//! scale `1/sqrt(dim_head)`, as diffusers' `AttnProcessor2_0`. With
//! `upcast_attention` (Stable Diffusion 2.1) a half-precision model computes
//! the attention in float32, which keeps fp16 scores from overflowing.

use tch::{nn, nn::Module, Kind, Tensor};

use crate::layers;

/// Construction options of a [`CrossAttention`] layer.
#[derive(Debug, Clone, Copy)]
pub struct CrossAttentionConfig {
    /// Width of the tokens (query dim and output dim).
    pub query_dim: i64,
    /// Width of the context tokens; `None`: self-attention.
    pub context_dim: Option<i64>,
    pub heads: i64,
    pub dim_head: i64,
    /// Biases on `to_q`, `to_k`, `to_v`.
    pub bias: bool,
    pub upcast: bool,
}

/// Multi-head (cross-)attention over `[N, L, C]` tokens.
#[derive(Debug)]
pub struct CrossAttention {
    pub to_q: nn::Linear,
    pub to_k: nn::Linear,
    pub to_v: nn::Linear,
    pub to_out: nn::Linear,
    pub cfg: CrossAttentionConfig,
}

impl CrossAttention {
    pub fn new(vs: nn::Path<'_>, cfg: &CrossAttentionConfig) -> Self {
        let inner = cfg.heads * cfg.dim_head;
        let kv = cfg.context_dim.unwrap_or(cfg.query_dim);
        let proj = |name: &str, cin: i64| {
            if cfg.bias {
                layers::linear(&vs / name, cin, inner)
            } else {
                layers::linear_no_bias(&vs / name, cin, inner)
            }
        };
        CrossAttention {
            to_q: proj("to_q", cfg.query_dim),
            to_k: proj("to_k", kv),
            to_v: proj("to_v", kv),
            to_out: layers::linear(&vs / "to_out" / "0", inner, cfg.query_dim),
            cfg: *cfg,
        }
    }

    /// `xs` `[N, L, query_dim]` attending to `context` `[N, S, context_dim]`
    /// (to itself when `None`), with an optional additive `bias` that
    /// broadcasts to `[N, heads, L, S]` (e.g. `[N, 1, 1, S]`, -10000 at
    /// masked context tokens). Returns `[N, L, query_dim]`.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>, bias: Option<&Tensor>) -> Tensor {
        let (n, _, _) = xs.size3().expect("attention tokens must be [N, L, C]");
        let (heads, d) = (self.cfg.heads, self.cfg.dim_head);
        let context = context.unwrap_or(xs);
        let split = |t: Tensor| t.view([n, -1, heads, d]).transpose(1, 2);
        let mut q = split(self.to_q.forward(xs));
        let mut k = split(self.to_k.forward(context));
        let mut v = split(self.to_v.forward(context));
        let kind = q.kind();
        let upcast = self.cfg.upcast && matches!(kind, Kind::Half | Kind::BFloat16);
        if upcast {
            q = q.to_kind(Kind::Float);
            k = k.to_kind(Kind::Float);
            v = v.to_kind(Kind::Float);
        }
        let bias = bias.map(|b| b.to_kind(q.kind()));
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            bias.as_ref(),
            0.0,
            false,
            None,
            false,
        );
        let attn = attn
            .transpose(1, 2)
            .reshape([n, -1, heads * d])
            .to_kind(kind);
        self.to_out.forward(&attn)
    }

    /// FLOPs for `l` query tokens over `s` context tokens, per sample.
    pub fn flops(&self, l: i64, s: i64) -> u64 {
        let inner = (self.cfg.heads * self.cfg.dim_head) as u64;
        layers::linear_flops(&self.to_q, l)
            + layers::linear_flops(&self.to_k, s)
            + layers::linear_flops(&self.to_v, s)
            + layers::linear_flops(&self.to_out, l)
            + 2 * 2 * (l as u64) * (s as u64) * inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The fused kernel agrees with softmax(QK^T/sqrt(d) + bias)V, and a
    /// masked context token gets no weight.
    #[test]
    fn matches_explicit_softmax_attention_with_a_mask() {
        tensor::seed::seed_everything(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = CrossAttentionConfig {
            query_dim: 8,
            context_dim: Some(6),
            heads: 2,
            dim_head: 4,
            bias: false,
            upcast: true,
        };
        let attn = CrossAttention::new(vs.root(), &cfg);
        let xs = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        let ctx = Tensor::randn([2, 3, 6], (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0]).reshape([2, 1, 1, 3]);
        let bias = (1.0 - &mask) * -10000.0;
        let got = attn.forward(&xs, Some(&ctx), Some(&bias));

        let split = |t: Tensor| t.view([2, -1, 2, 4]).transpose(1, 2);
        let q = split(attn.to_q.forward(&xs));
        let k = split(attn.to_k.forward(&ctx));
        let v = split(attn.to_v.forward(&ctx));
        let p = (q.matmul(&k.transpose(-1, -2)) / 2.0 + &bias).softmax(-1, Kind::Float);
        assert!(p.get(0).narrow(-1, 2, 1).max().double_value(&[]) < 1e-6);
        let o = p.matmul(&v).transpose(1, 2).reshape([2, 5, 8]);
        let expected = attn.to_out.forward(&o);
        assert!(got.allclose(&expected, 1e-5, 1e-5, false));
        assert!(attn.to_q.bs.is_none());
    }
}
