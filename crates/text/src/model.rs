//! `CLIPTextTransformer`: embeddings, the encoder (causal self-attention)
//! and `final_layer_norm`, with the pooled output at the end-of-text
//! position; and diffusers' `clip_skip`.

use tch::{nn, nn::Module, Kind, Tensor};

use crate::config::{ClipTextDims, LEGACY_EOS_TOKEN_ID};
use crate::embeddings::ClipTextEmbeddings;
use crate::encoder::ClipEncoder;
use crate::error::{Error, Result};
use crate::layers::layer_norm;

/// What the text model computes for a batch of ids.
#[derive(Debug)]
pub struct ClipTextOutput {
    /// `[B, L, hidden]`: the last layer's output after `final_layer_norm`
    /// (the U-Net's `encoder_hidden_states` when `clip_skip` is unset).
    pub last_hidden_state: Tensor,
    /// `[B, hidden]`: `last_hidden_state` at each row's end-of-text token.
    pub pooled_output: Tensor,
    /// The embeddings and the output of every layer, before the final norm
    /// (`num_hidden_layers + 1` tensors of `[B, L, hidden]`), as
    /// transformers' `output_hidden_states=True` gives them.
    pub hidden_states: Vec<Tensor>,
}

/// The text model (transformers' `CLIPTextTransformer`, the `text_model`
/// of `CLIPTextModel`).
#[derive(Debug)]
pub struct ClipTextTransformer {
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: nn::LayerNorm,
    pub dims: ClipTextDims,
}

impl ClipTextTransformer {
    /// Initialised as transformers initialises a new model, scaled by
    /// `initializer_factor`.
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, initializer_factor: f64) -> Self {
        ClipTextTransformer {
            embeddings: ClipTextEmbeddings::new(&vs / "embeddings", dims, initializer_factor),
            encoder: ClipEncoder::new(&vs / "encoder", dims, initializer_factor),
            final_layer_norm: layer_norm(
                &vs / "final_layer_norm",
                dims.hidden_size,
                dims.layer_norm_eps,
            ),
            dims: *dims,
        }
    }

    /// Runs the model on `input_ids` (`[B, L]` integers, `L` at most
    /// `max_position_embeddings`). `attention_mask` (`[B, L]`, 1 = token,
    /// 0 = padding) hides padding from the attention on top of the causal
    /// mask; Stable Diffusion passes none (its configs do not set
    /// `use_attention_mask`).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<ClipTextOutput> {
        let ids = self.check_ids(input_ids)?;
        let (b, l) = (ids.size()[0], ids.size()[1]);
        let mask = match attention_mask {
            None => None,
            Some(m) => {
                if m.size() != [b, l] {
                    return Err(Error::Input(format!(
                        "attention_mask has shape {:?}: expected [{b}, {l}] like input_ids",
                        m.size()
                    )));
                }
                let keep = m.to_device(ids.device()).ne(0).view([b, 1, 1, l]);
                let causal = Tensor::ones([l, l], (Kind::Bool, ids.device())).tril(0);
                Some(causal.view([1, 1, l, l]).logical_and(&keep))
            }
        };
        let embeddings = self.embeddings.forward(&ids);
        let hidden_states = self.encoder.forward(&embeddings, mask.as_ref());
        let last = hidden_states.last().expect("embeddings are always there");
        let last_hidden_state = self.final_layer_norm.forward(last);
        let pooled_output = self.pool(&last_hidden_state, &ids);
        Ok(ClipTextOutput {
            last_hidden_state,
            pooled_output,
            hidden_states,
        })
    }

    /// The prompt embeddings of diffusers' `encode_prompt`: with `clip_skip`
    /// `None`, `last_hidden_state`; with `Some(k)`, `hidden_states[-(k +
    /// 1)]` through `final_layer_norm` (k = 1: the penultimate layer).
    pub fn clip_skip(&self, output: &ClipTextOutput, clip_skip: Option<usize>) -> Result<Tensor> {
        let Some(k) = clip_skip else {
            return Ok(output.last_hidden_state.shallow_clone());
        };
        let n = output.hidden_states.len();
        if k >= n {
            return Err(Error::Input(format!(
                "clip_skip {k}: the model has {} layers, so at most {}",
                n - 1,
                n - 1
            )));
        }
        Ok(self
            .final_layer_norm
            .forward(&output.hidden_states[n - 1 - k]))
    }

    /// `last_hidden_state` at the end-of-text position of each row: the
    /// first `eos_token_id`, or (legacy configs, `eos_token_id` 2) the
    /// largest id, as transformers picks it.
    fn pool(&self, last_hidden_state: &Tensor, ids: &Tensor) -> Tensor {
        let eos = self.dims.eos_token_id;
        let positions = if eos == LEGACY_EOS_TOKEN_ID {
            ids.argmax(-1, false)
        } else {
            ids.eq(eos).to_kind(Kind::Int).argmax(-1, false)
        };
        let rows = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        last_hidden_state.index(&[Some(rows), Some(positions)])
    }

    /// `input_ids` as int64 on the model's device, after checking its shape
    /// and range.
    fn check_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let size = input_ids.size();
        if size.len() != 2 || size[1] == 0 {
            return Err(Error::Input(format!(
                "input_ids has shape {size:?}: expected [batch, length] with length >= 1"
            )));
        }
        if size[1] > self.dims.max_position_embeddings {
            return Err(Error::Input(format!(
                "input_ids has {} positions: the model has {} (max_position_embeddings)",
                size[1], self.dims.max_position_embeddings
            )));
        }
        let kind = input_ids.kind();
        if !matches!(
            kind,
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(Error::Input(format!(
                "input_ids has dtype {kind:?}: expected integers"
            )));
        }
        let device = self.embeddings.token_embedding.ws.device();
        let ids = input_ids.to_kind(Kind::Int64).to_device(device);
        if size[0] > 0 {
            let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
            if lo < 0 || hi >= self.dims.vocab_size {
                return Err(Error::Input(format!(
                    "input_ids holds ids {lo}..={hi}: the vocabulary has {} (vocab_size)",
                    self.dims.vocab_size
                )));
            }
        }
        Ok(ids)
    }
}
