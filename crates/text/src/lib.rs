//! The text side of text-to-image: CLIP's tokenizer and transformers'
//! `CLIPTextModel`, reading the same folders and computing what
//! transformers computes.
//!
//! - [`tokenizer`]: [`ClipTokenizer`], byte-level BPE with `</w>` word
//!   ends, padded or cut to 77 tokens; what was cut comes back so the
//!   caller can warn.
//! - [`tokenizer_files`]: the files of a tokenizer folder (`tokenizer.json`,
//!   or `vocab.json` + `merges.txt`, with `tokenizer_config.json` and
//!   `special_tokens_map.json`), read as transformers reads them.
//! - [`config`]: [`ClipTextConfig`], transformers' `config.json` key for
//!   key, and the [`ClipTextConfig::sd15`] preset.
//! - [`activations`], [`embeddings`], [`attention`], [`mlp`], [`encoder`],
//!   [`model`]: the blocks, one file each, named as in transformers;
//!   variable names are the state-dict keys; [`layers`]: the linear and
//!   LayerNorm layers they are made of.
//! - [`io`]: [`ClipTextModel`] (model + weights), loaded from a
//!   `text_encoder/` folder or a pipeline folder, on a chosen device and
//!   dtype.
//!
//! ```no_run
//! use text::{tch::Device, ClipTextModel, ClipTokenizer, DType};
//! let tokenizer = ClipTokenizer::from_folder("stable-diffusion-v1-5")?;
//! let encoder = ClipTextModel::load("stable-diffusion-v1-5", Device::Cpu, DType::F32)?;
//! let encodings = tokenizer.encode_batch(&["a photo of an astronaut riding a horse", ""])?;
//! for e in &encodings {
//!     if let Some(warning) = e.truncation_warning() {
//!         eprintln!("{warning}");
//!     }
//! }
//! let (ids, _mask) = text::batch_tensors(&encodings, Device::Cpu)?;
//! // [2, 77, 768]: the U-Net's encoder_hidden_states (no clip_skip)
//! let embeddings = encoder.prompt_embeds(&ids, None, None)?;
//! # Ok::<(), text::Error>(())
//! ```

pub mod activations;
pub mod attention;
pub mod config;
pub mod embeddings;
pub mod encoder;
mod error;
pub mod io;
pub mod layers;
pub mod mlp;
pub mod model;
pub mod tokenizer;
pub mod tokenizer_files;

pub use config::ClipTextConfig;
pub use error::{Error, Result};
pub use io::ClipTextModel;
pub use model::{ClipTextOutput, ClipTextTransformer};
pub use tch;
pub use tensor::DType;
pub use tokenizer::{batch_tensors, ClipTokenizer, Encoding};
pub use tokenizers;
