//! `CLIPEncoderLayer` (pre-LayerNorm: `layer_norm1`, `self_attn`, residual;
//! `layer_norm2`, `mlp`, residual) and `CLIPEncoder`, its stack (`layers.N`).

use tch::{nn, nn::Module, Tensor};

use crate::attention::ClipAttention;
use crate::config::ClipTextDims;
use crate::layers::layer_norm;
use crate::mlp::ClipMlp;

/// One pre-LN transformer layer.
#[derive(Debug)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: nn::LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: nn::LayerNorm,
}

impl ClipEncoderLayer {
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, factor: f64) -> Self {
        let (h, eps) = (dims.hidden_size, dims.layer_norm_eps);
        ClipEncoderLayer {
            self_attn: ClipAttention::new(&vs / "self_attn", dims, factor),
            layer_norm1: layer_norm(&vs / "layer_norm1", h, eps),
            mlp: ClipMlp::new(&vs / "mlp", dims, factor),
            layer_norm2: layer_norm(&vs / "layer_norm2", h, eps),
        }
    }

    /// See [`ClipAttention::forward`] for `mask`.
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let xs = xs + self.self_attn.forward(&self.layer_norm1.forward(xs), mask);
        &xs + self.mlp.forward(&self.layer_norm2.forward(&xs))
    }
}

/// The stack of encoder layers.
#[derive(Debug)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, factor: f64) -> Self {
        let layers = &vs / "layers";
        ClipEncoder {
            layers: (0..dims.num_hidden_layers)
                .map(|i| ClipEncoderLayer::new(&layers / i, dims, factor))
                .collect(),
        }
    }

    /// The input followed by the output of every layer (transformers'
    /// `hidden_states`: `num_hidden_layers + 1` tensors; the last is the
    /// encoder's output, before the final LayerNorm).
    pub fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Vec<Tensor> {
        let mut states = Vec::with_capacity(self.layers.len() + 1);
        states.push(xs.shallow_clone());
        for layer in &self.layers {
            let next = layer.forward(states.last().expect("never empty"), mask);
            states.push(next);
        }
        states
    }
}
