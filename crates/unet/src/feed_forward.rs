//! diffusers' `FeedForward` with `activation_fn="geglu"`, the MLP of the
//! transformer blocks: `net.0` is a GEGLU (`proj` to twice the inner width,
//! split into a value and a gate, value * GELU(gate) with the exact erf
//! GELU), `net.2` the linear layer back (`net.1` is dropout).

use tch::{nn, nn::Module, Tensor};

use crate::layers;

/// `[.., dim] -> [.., dim]` through a gated GELU of width `inner`.
#[derive(Debug)]
pub struct FeedForward {
    /// `net.0.proj`: `dim -> 2 * inner`.
    pub proj: nn::Linear,
    /// `net.2`: `inner -> dim`.
    pub out: nn::Linear,
    pub dropout: f64,
}

impl FeedForward {
    /// diffusers' default inner width is `4 * dim`.
    pub fn new(vs: nn::Path<'_>, dim: i64, inner: i64, dropout: f64) -> Self {
        FeedForward {
            proj: layers::linear(&vs / "net" / "0" / "proj", dim, 2 * inner),
            out: layers::linear(&vs / "net" / "2", inner, dim),
            dropout,
        }
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.proj.forward(xs);
        let halves = h.chunk(2, -1);
        let gated = &halves[0] * halves[1].gelu("none");
        self.out.forward(&gated.dropout(self.dropout, train))
    }

    /// FLOPs for `tokens` tokens.
    pub fn flops(&self, tokens: i64) -> u64 {
        layers::linear_flops(&self.proj, tokens) + layers::linear_flops(&self.out, tokens)
    }
}
