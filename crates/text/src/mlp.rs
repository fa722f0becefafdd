//! `CLIPMLP`: `fc1`, the config's activation, `fc2`.

use tch::{nn, nn::Module, Tensor};

use crate::activations::Activation;
use crate::config::ClipTextDims;
use crate::layers::linear;

/// The feed-forward block of one encoder layer.
#[derive(Debug)]
pub struct ClipMlp {
    pub fc1: nn::Linear,
    pub fc2: nn::Linear,
    pub activation: Activation,
}

impl ClipMlp {
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, factor: f64) -> Self {
        let (h, i) = (dims.hidden_size, dims.intermediate_size);
        let hf = h as f64;
        // transformers CLIPPreTrainedModel._init_weights
        let in_std = hf.powf(-0.5) * (2.0 * dims.num_hidden_layers as f64).powf(-0.5) * factor;
        let fc_std = (2.0 * hf).powf(-0.5) * factor;
        ClipMlp {
            fc1: linear(&vs / "fc1", h, i, fc_std),
            fc2: linear(&vs / "fc2", i, h, in_std),
            activation: dims.activation,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        self.fc2
            .forward(&self.activation.forward(&self.fc1.forward(xs)))
    }
}
