//! The text side of text-to-image: CLIP's tokenizer, reading and computing
//! what transformers does.
//!
//! - [`tokenizer`]: [`ClipTokenizer`], byte-level BPE with `</w>` word
//!   ends, padded or cut to 77 tokens; what was cut comes back so the
//!   caller can warn.
//! - [`tokenizer_files`]: the files of a tokenizer folder (`tokenizer.json`,
//!   or `vocab.json` + `merges.txt`, with `tokenizer_config.json` and
//!   `special_tokens_map.json`), read as transformers reads them.
//!
//! ```no_run
//! use text::ClipTokenizer;
//! let tokenizer = ClipTokenizer::from_folder("stable-diffusion-v1-5")?;
//! let e = tokenizer.encode("a photo of an astronaut riding a horse")?;
//! assert_eq!(e.ids.len(), 77);
//! # Ok::<(), text::Error>(())
//! ```

mod error;
pub mod tokenizer;
pub mod tokenizer_files;

pub use error::{Error, Result};
pub use tch;
pub use tokenizer::{batch_tensors, ClipTokenizer, Encoding};
pub use tokenizers;
