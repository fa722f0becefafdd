//! diffusers' `Attention` as the `UNet2DModel` blocks use it: self-attention
//! over the `H * W` positions of a feature map, with an optional GroupNorm
//! in front, a residual connection and `rescale_output_factor`. Variables
//! are named as in diffusers: `group_norm`, `to_q`, `to_k`, `to_v`,
//! `to_out.0`. The product runs through `Tensor::scaled_dot_product_attention`
//! (fused flash / memory-efficient kernels on CPU and GPU), with diffusers'
//! scale `1/sqrt(dim_head)`.

use tch::{nn, nn::Module, Tensor};

use crate::layers;

/// Construction options of an [`Attention`] layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    /// Channels of the feature map (query dim and output dim).
    pub channels: i64,
    pub heads: i64,
    pub dim_head: i64,
    /// Groups of the GroupNorm in front; `None`: no norm.
    pub norm_groups: Option<i64>,
    pub eps: f64,
    pub rescale_output_factor: f64,
}

/// Spatial multi-head self-attention with a residual connection.
#[derive(Debug)]
pub struct Attention {
    pub group_norm: Option<nn::GroupNorm>,
    pub to_q: nn::Linear,
    pub to_k: nn::Linear,
    pub to_v: nn::Linear,
    pub to_out: nn::Linear,
    pub cfg: AttentionConfig,
}

impl Attention {
    pub fn new(vs: nn::Path<'_>, cfg: &AttentionConfig) -> Self {
        let c = cfg.channels;
        let inner = cfg.heads * cfg.dim_head;
        Attention {
            group_norm: cfg
                .norm_groups
                .map(|g| layers::group_norm(&vs / "group_norm", g, c, cfg.eps)),
            to_q: layers::linear(&vs / "to_q", c, inner),
            to_k: layers::linear(&vs / "to_k", c, inner),
            to_v: layers::linear(&vs / "to_v", c, inner),
            to_out: layers::linear(&vs / "to_out" / "0", inner, c),
            cfg: *cfg,
        }
    }

    /// `[N, C, H, W] -> [N, C, H, W]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        let (n, c, h, w) = xs.size4().expect("attention input must be [N, C, H, W]");
        let (heads, d) = (self.cfg.heads, self.cfg.dim_head);
        let normed = match &self.group_norm {
            Some(gn) => gn.forward(xs),
            None => xs.shallow_clone(),
        };
        // [N, C, H, W] -> [N, L, C]
        let tokens = normed.view([n, c, h * w]).transpose(1, 2);
        let split = |t: Tensor| t.view([n, -1, heads, d]).transpose(1, 2);
        let q = split(self.to_q.forward(&tokens));
        let k = split(self.to_k.forward(&tokens));
        let v = split(self.to_v.forward(&tokens));
        let attn = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let attn = attn.transpose(1, 2).reshape([n, -1, heads * d]);
        let out = self
            .to_out
            .forward(&attn)
            .transpose(-1, -2)
            .reshape([n, c, h, w]);
        let out = out + xs;
        if self.cfg.rescale_output_factor == 1.0 {
            out
        } else {
            out / self.cfg.rescale_output_factor
        }
    }

    /// FLOPs over an `h x w` map, per sample: the four projections plus
    /// `Q K^T` and `softmax(.) V` (each `2 * L^2 * heads * dim_head`).
    pub fn flops(&self, h: i64, w: i64) -> u64 {
        let l = h * w;
        let inner = (self.cfg.heads * self.cfg.dim_head) as u64;
        layers::linear_flops(&self.to_q, l)
            + layers::linear_flops(&self.to_k, l)
            + layers::linear_flops(&self.to_v, l)
            + layers::linear_flops(&self.to_out, l)
            + 2 * 2 * (l as u64) * (l as u64) * inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The fused kernel agrees with the textbook softmax(QK^T/sqrt(d))V.
    #[test]
    fn matches_explicit_softmax_attention() {
        tensor::seed::seed_everything(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = AttentionConfig {
            channels: 8,
            heads: 2,
            dim_head: 4,
            norm_groups: Some(4),
            eps: 1e-5,
            rescale_output_factor: 2.0,
        };
        let attn = Attention::new(vs.root(), &cfg);
        let xs = Tensor::randn([2, 8, 3, 5], (Kind::Float, Device::Cpu));
        let got = attn.forward(&xs);

        let t = attn
            .group_norm
            .as_ref()
            .unwrap()
            .forward(&xs)
            .view([2, 8, 15])
            .transpose(1, 2);
        let split = |t: Tensor| t.view([2, 15, 2, 4]).transpose(1, 2);
        let (q, k, v) = (
            split(attn.to_q.forward(&t)),
            split(attn.to_k.forward(&t)),
            split(attn.to_v.forward(&t)),
        );
        let p = (q.matmul(&k.transpose(-1, -2)) / 2.0).softmax(-1, Kind::Float);
        let o = p.matmul(&v).transpose(1, 2).reshape([2, 15, 8]);
        let o = attn
            .to_out
            .forward(&o)
            .transpose(1, 2)
            .reshape([2, 8, 3, 5]);
        let expected = (o + &xs) / 2.0;
        assert!(got.allclose(&expected, 1e-5, 1e-5, false));
    }
}
