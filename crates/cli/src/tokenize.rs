//! `lmzh tokenize`: a prompt as the CLIP tokenizer of a model folder turns
//! it into ids (padded or cut to 77, as the text encoder gets them).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use text::ClipTokenizer;

/// Flags of `lmzh tokenize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A diffusers pipeline folder (its tokenizer/ is used) or a tokenizer
    /// folder (tokenizer.json, or vocab.json + merges.txt).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,

    /// The text to tokenize.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,

    /// Print one JSON object: {"ids": [...], "tokens": [...], "truncated":
    /// bool, "truncated_text": "..." or null}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let tokenizer = ClipTokenizer::from_folder(&args.model)
        .with_context(|| format!("--model {}", args.model.display()))?;
    let encoding = tokenizer.encode(&args.prompt).context("--prompt")?;
    let unpadded = &encoding.ids[..encoding.len_unpadded()];
    let tokens = tokenizer.tokens(unpadded)?;
    if let Some(warning) = encoding.truncation_warning() {
        tracing::warn!("{warning}");
    }
    if args.json {
        let value = serde_json::json!({
            "ids": encoding.ids,
            "tokens": tokens,
            "truncated": encoding.truncated.is_some(),
            "truncated_text": encoding.truncated,
        });
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    let join = |v: &[String]| v.join(" ");
    let ids: Vec<String> = encoding.ids.iter().map(i64::to_string).collect();
    println!(
        "ids ({}, {} before padding with {:?} = {}):",
        ids.len(),
        unpadded.len(),
        tokenizer.pad_token(),
        tokenizer.pad_token_id()
    );
    println!("{}", join(&ids));
    println!("tokens ({}):", tokens.len());
    println!("{}", join(&tokens));
    if let Some(cut) = &encoding.truncated {
        println!("truncated: {cut}");
    }
    Ok(ExitCode::SUCCESS)
}
