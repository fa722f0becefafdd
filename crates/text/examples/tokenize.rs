//! Tokenize a prompt with a model's CLIP tokenizer and, when the folder has
//! a text encoder, compute its prompt embeddings.
//!
//! ```sh
//! cargo run -p text --example tokenize -- crates/text/tests/fixtures/sd1-tiny "A photo of an astronaut"
//! cargo run -p text --example tokenize -- path/to/stable-diffusion-v1-5 "a castle at dusk" 1   # clip_skip 1
//! ```

use text::tch::Device;
use text::{batch_tensors, ClipTextModel, ClipTokenizer, DType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(prompt)) = (args.next(), args.next()) else {
        eprintln!("usage: tokenize PIPELINE_OR_TOKENIZER_DIR PROMPT [CLIP_SKIP]");
        std::process::exit(2);
    };
    let clip_skip = args.next().map(|s| s.parse::<usize>()).transpose()?;

    let tokenizer = ClipTokenizer::from_folder(&dir)?;
    let encoding = tokenizer.encode(&prompt)?;
    if let Some(warning) = encoding.truncation_warning() {
        eprintln!("{warning}");
    }
    let real = &encoding.ids[..encoding.len_unpadded()];
    println!(
        "ids:    {real:?} (+ {} pad ids)",
        encoding.ids.len() - real.len()
    );
    println!("tokens: {:?}", tokenizer.tokens(real)?);
    println!("back:   {:?}", tokenizer.decode(real, true)?);

    // The text encoder, when the folder is a pipeline with text_encoder/.
    if text::io::resolve_model_dir(&dir).is_err() {
        return Ok(());
    }
    let encoder = ClipTextModel::load(&dir, Device::cuda_if_available(), DType::F32)?;
    // The prompt and the empty prompt, as classifier-free guidance uses them.
    let encodings = tokenizer.encode_batch(&[prompt.as_str(), ""])?;
    let (ids, _mask) = batch_tensors(&encodings, encoder.device())?;
    let embeds = text::tch::no_grad(|| encoder.prompt_embeds(&ids, None, clip_skip))?;
    println!(
        "prompt embeddings: {:?} (conditional, unconditional), clip_skip {clip_skip:?}",
        embeds.size()
    );
    Ok(())
}
