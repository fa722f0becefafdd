//! diffusers' `TextTimeEmbedding` (`addition_embed_type: "text"` of a
//! `UNet2DConditionModel`): the encoder hidden states pooled by attention
//! into one vector per prompt, projected to the time embedding's width and
//! added to it. Every ResNet block then sees the prompt as a whole, as a
//! class-conditional U-Net sees its label, besides reading the tokens
//! through cross-attention.
//!
//! ```text
//! states [N, S, D] -> LayerNorm -> AttentionPooling -> Linear(D, T) -> LayerNorm -> [N, T]
//! AttentionPooling: query = mean over tokens + positional_embedding;
//!                   keys/values = [query; tokens]; per-head softmax(q k / sqrt(d)) v,
//!                   heads concatenated (no output projection)
//! ```

use tch::{nn, nn::Module, Kind, Tensor};

use crate::layers;

/// diffusers' `AttentionPooling` (from GLIDE): one learned-offset query,
/// the mean of the tokens, attends to itself and the tokens.
#[derive(Debug)]
pub struct AttentionPooling {
    /// `[1, D]`.
    pub positional_embedding: Tensor,
    pub k_proj: nn::Linear,
    pub q_proj: nn::Linear,
    pub v_proj: nn::Linear,
    pub heads: i64,
}

impl AttentionPooling {
    /// `dim` must be a multiple of `heads` (checked by the config).
    pub fn new(vs: nn::Path<'_>, heads: i64, dim: i64) -> Self {
        let positional_embedding = vs.var(
            "positional_embedding",
            &[1, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0 / (dim as f64).sqrt(),
            },
        );
        AttentionPooling {
            positional_embedding,
            k_proj: layers::linear(&vs / "k_proj", dim, dim),
            q_proj: layers::linear(&vs / "q_proj", dim, dim),
            v_proj: layers::linear(&vs / "v_proj", dim, dim),
            heads,
        }
    }

    /// `[N, S, D] -> [N, D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (n, _, width) = x.size3().expect("checked by the U-Net: [N, S, D]");
        let kind = x.kind();
        let heads = self.heads;
        let d = width / heads;
        let query = x.mean_dim(1, true, kind) + self.positional_embedding.to_kind(kind);
        let x = Tensor::cat(&[&query, x], 1);
        // [N, L, D] -> [N * heads, L, d]
        let split = |t: Tensor| {
            t.view([n, -1, heads, d])
                .transpose(1, 2)
                .reshape([n * heads, -1, d])
        };
        // diffusers scales queries and keys by d^(-1/4) each.
        let scale = 1.0 / (d as f64).sqrt().sqrt();
        let q = split(self.q_proj.forward(&query)) * scale;
        let k = split(self.k_proj.forward(&x)) * scale;
        let v = split(self.v_proj.forward(&x));
        // Softmax in float32 as diffusers (in float64 for a float64 model).
        let soft = if kind == Kind::Double {
            Kind::Double
        } else {
            Kind::Float
        };
        let weights = q
            .matmul(&k.transpose(1, 2))
            .to_kind(soft)
            .softmax(-1, soft)
            .to_kind(kind);
        // [N * heads, 1, d] -> [N, heads * d]
        weights.matmul(&v).reshape([n, width])
    }

    /// FLOPs for `n` prompts of `s` tokens.
    pub fn flops(&self, n: i64, s: i64) -> u64 {
        let width = self.q_proj.ws.size()[0] as u64;
        layers::linear_flops(&self.q_proj, n)
            + layers::linear_flops(&self.k_proj, n * (s + 1))
            + layers::linear_flops(&self.v_proj, n * (s + 1))
            + 4 * n as u64 * (s as u64 + 1) * width
    }
}

/// diffusers' `TextTimeEmbedding`.
#[derive(Debug)]
pub struct TextTimeEmbedding {
    pub norm1: nn::LayerNorm,
    pub pool: AttentionPooling,
    pub proj: nn::Linear,
    pub norm2: nn::LayerNorm,
}

impl TextTimeEmbedding {
    /// Encoder width `encoder_dim`, time-embedding width `time_embed_dim`.
    pub fn new(vs: nn::Path<'_>, encoder_dim: i64, time_embed_dim: i64, heads: i64) -> Self {
        TextTimeEmbedding {
            norm1: layers::layer_norm(&vs / "norm1", encoder_dim, 1e-5),
            pool: AttentionPooling::new(&vs / "pool", heads, encoder_dim),
            proj: layers::linear(&vs / "proj", encoder_dim, time_embed_dim),
            norm2: layers::layer_norm(&vs / "norm2", time_embed_dim, 1e-5),
        }
    }

    /// `[N, S, D] -> [N, time_embed_dim]`.
    pub fn forward(&self, states: &Tensor) -> Tensor {
        let pooled = self.pool.forward(&self.norm1.forward(states));
        self.norm2.forward(&self.proj.forward(&pooled))
    }

    /// FLOPs for `n` prompts of `s` tokens.
    pub fn flops(&self, n: i64, s: i64) -> u64 {
        self.pool.flops(n, s) + layers::linear_flops(&self.proj, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// With a zero positional embedding, pooling a prompt of identical
    /// tokens returns the value projection of that token (the query is that
    /// token too, and every softmax weight lands on the same value); and the
    /// output does not depend on the order of the tokens.
    #[test]
    fn pooling_is_a_weighted_mean_of_values_and_order_free() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut pool = AttentionPooling::new(vs.root(), 4, 8);
        tch::no_grad(|| {
            let _ = pool.positional_embedding.zero_();
        });
        tch::manual_seed(3);
        let token = Tensor::randn([1, 1, 8], (Kind::Float, Device::Cpu));
        let same = token.repeat([2, 5, 1]);
        let out = pool.forward(&same);
        let want = pool.v_proj.forward(&token.squeeze_dim(1)).repeat([2, 1]);
        assert!(out.allclose(&want, 1e-5, 1e-6, false));

        let x = Tensor::randn([1, 6, 8], (Kind::Float, Device::Cpu));
        let perm = Tensor::from_slice(&[5i64, 2, 0, 4, 1, 3]);
        let shuffled = x.index_select(1, &perm);
        assert!(pool
            .forward(&x)
            .allclose(&pool.forward(&shuffled), 1e-5, 1e-6, false));
    }

    #[test]
    fn text_time_embedding_has_diffusers_names_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let emb = TextTimeEmbedding::new(&vs.root() / "add_embedding", 8, 32, 2);
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "add_embedding.norm1.bias",
                "add_embedding.norm1.weight",
                "add_embedding.norm2.bias",
                "add_embedding.norm2.weight",
                "add_embedding.pool.k_proj.bias",
                "add_embedding.pool.k_proj.weight",
                "add_embedding.pool.positional_embedding",
                "add_embedding.pool.q_proj.bias",
                "add_embedding.pool.q_proj.weight",
                "add_embedding.pool.v_proj.bias",
                "add_embedding.pool.v_proj.weight",
                "add_embedding.proj.bias",
                "add_embedding.proj.weight",
            ]
        );
        let x = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu));
        assert_eq!(emb.forward(&x).size(), [3, 32]);
    }
}
