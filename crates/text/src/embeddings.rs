//! `CLIPTextEmbeddings`: token embeddings plus learned position embeddings
//! (`token_embedding`, `position_embedding`).

use tch::{nn, nn::Module, Kind, Tensor};

use crate::config::ClipTextDims;

/// Token and position embeddings of the text model.
#[derive(Debug)]
pub struct ClipTextEmbeddings {
    pub token_embedding: nn::Embedding,
    pub position_embedding: nn::Embedding,
}

impl ClipTextEmbeddings {
    /// Both tables drawn from `N(0, (0.02 factor)^2)`, as transformers
    /// initialises them.
    pub fn new(vs: nn::Path<'_>, dims: &ClipTextDims, factor: f64) -> Self {
        let cfg = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02 * factor,
            },
            ..Default::default()
        };
        ClipTextEmbeddings {
            token_embedding: nn::embedding(
                &vs / "token_embedding",
                dims.vocab_size,
                dims.hidden_size,
                cfg,
            ),
            position_embedding: nn::embedding(
                &vs / "position_embedding",
                dims.max_position_embeddings,
                dims.hidden_size,
                cfg,
            ),
        }
    }

    /// `[B, L]` int64 ids -> `[B, L, hidden]`; positions `0..L`.
    pub fn forward(&self, input_ids: &Tensor) -> Tensor {
        let len = input_ids.size()[1];
        let positions = Tensor::arange(len, (Kind::Int64, input_ids.device()));
        self.token_embedding.forward(input_ids) + self.position_embedding.forward(&positions)
    }
}
