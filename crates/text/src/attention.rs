//! `CLIPAttention`: multi-head self-attention over the tokens, causal, with
//! an optional padding mask (`q_proj`, `k_proj`, `v_proj`, `out_proj`).
//! The product runs through `Tensor::scaled_dot_product_attention` (fused
//! kernels on CPU and GPU) with transformers' scale `head_dim^-0.5`.

use tch::{nn, nn::Module, Tensor};

use crate::config::ClipTextDims;
use crate::layers::linear;

/// Self-attention of one encoder layer.
#[derive(Debug)]
pub struct ClipAttention {
    pub q_proj: nn::Linear,
    pub k_proj: nn::Linear,
    pub v_proj: nn::Linear,
    pub out_proj: nn::Linear,
    pub heads: i64,
    pub head_dim: i64,
}

impl ClipAttention {
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, factor: f64) -> Self {
        let h = dims.hidden_size;
        let hf = h as f64;
        // transformers CLIPPreTrainedModel._init_weights
        let in_std = hf.powf(-0.5) * (2.0 * dims.num_hidden_layers as f64).powf(-0.5) * factor;
        let out_std = hf.powf(-0.5) * factor;
        ClipAttention {
            q_proj: linear(&vs / "q_proj", h, h, in_std),
            k_proj: linear(&vs / "k_proj", h, h, in_std),
            v_proj: linear(&vs / "v_proj", h, h, in_std),
            out_proj: linear(&vs / "out_proj", h, h, out_std),
            heads: dims.num_attention_heads,
            head_dim: dims.head_dim(),
        }
    }

    /// `[B, L, hidden] -> [B, L, hidden]`. `mask`: `None` for causal
    /// attention alone, or a boolean `[B, 1, L, L]` (true: attend) that
    /// already combines the causal and the padding masks.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (b, l, _) = xs.size3().expect("attention input is [B, L, hidden]");
        let split = |t: Tensor| t.view([b, l, self.heads, self.head_dim]).transpose(1, 2);
        let q = split(self.q_proj.forward(xs));
        let k = split(self.k_proj.forward(xs));
        let v = split(self.v_proj.forward(xs));
        let out = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            None,
            false,
        );
        let out = out
            .transpose(1, 2)
            .reshape([b, l, self.heads * self.head_dim]);
        self.out_proj.forward(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Activation;
    use tch::{Device, Kind};

    fn dims() -> ClipTextDims {
        ClipTextDims {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            max_position_embeddings: 6,
            layer_norm_eps: 1e-5,
            activation: Activation::Gelu,
            eos_token_id: 9,
        }
    }

    /// softmax(QK^T / sqrt(d) + mask) V, written out (transformers' eager path).
    fn explicit(attn: &ClipAttention, xs: &Tensor, allowed: &Tensor) -> Tensor {
        let (b, l, _) = xs.size3().unwrap();
        let split = |t: Tensor| t.view([b, l, 2, 4]).transpose(1, 2);
        let q = split(attn.q_proj.forward(xs));
        let k = split(attn.k_proj.forward(xs));
        let v = split(attn.v_proj.forward(xs));
        let scores = q.matmul(&k.transpose(-1, -2)) * 0.5;
        let scores = scores.masked_fill(&allowed.logical_not(), f64::NEG_INFINITY);
        let p = scores.softmax(-1, Kind::Float);
        attn.out_proj
            .forward(&p.matmul(&v).transpose(1, 2).reshape([b, l, 8]))
    }

    #[test]
    fn causal_and_padding_masks_match_the_textbook_formula() {
        tensor::seed::seed_everything(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let attn = ClipAttention::new(vs.root(), &dims(), 1.0);
        let xs = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        let causal = Tensor::ones([5, 5], (Kind::Bool, Device::Cpu)).tril(0);
        let got = attn.forward(&xs, None);
        let want = explicit(&attn, &xs, &causal.view([1, 1, 5, 5]));
        assert!(got.allclose(&want, 1e-5, 1e-6, false));

        let keep = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 1, 1, 1])
            .view([2, 1, 1, 5])
            .to_kind(Kind::Bool);
        let mask = causal.view([1, 1, 5, 5]).logical_and(&keep);
        let got = attn.forward(&xs, Some(&mask));
        let want = explicit(&attn, &xs, &mask);
        assert!(got.allclose(&want, 1e-5, 1e-6, false));
    }
}
