//! The files of a CLIP tokenizer folder, read as transformers reads them.
//!
//! A folder holds the vocabulary and merges either as `tokenizer.json` (the
//! Hugging Face tokenizers format, which transformers 5 writes) or as
//! `vocab.json` + `merges.txt` (what the Stable Diffusion 1.x and 2.x
//! repositories ship); `tokenizer.json` wins when both are there, as in
//! transformers. `tokenizer_config.json` names the special tokens and
//! `model_max_length`; `special_tokens_map.json` overrides its special
//! tokens unless the config lists its `added_tokens_decoder` (transformers'
//! legacy rule). Only the vocabulary, merges and added tokens are taken from
//! `tokenizer.json`: transformers' `CLIPTokenizer` rebuilds the rest of the
//! pipeline itself, and so does [`crate::ClipTokenizer`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{read_json, Error, Result};

/// The subfolder of a diffusers pipeline folder that holds its tokenizer.
pub const TOKENIZER_SUBFOLDER: &str = "tokenizer";
/// The Hugging Face tokenizers serialisation.
pub const TOKENIZER_JSON: &str = "tokenizer.json";
/// Token -> id of a byte-level BPE vocabulary.
pub const VOCAB_JSON: &str = "vocab.json";
/// The BPE merges, one `left right` pair a line, by rank.
pub const MERGES_TXT: &str = "merges.txt";
/// transformers' tokenizer settings (special tokens, `model_max_length`).
pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer_config.json";
/// transformers' legacy special-token file.
pub const SPECIAL_TOKENS_MAP_JSON: &str = "special_tokens_map.json";

/// CLIP's context length: the `model_max_length` of every CLIP tokenizer,
/// used when `tokenizer_config.json` does not set it.
pub const CLIP_MAX_LENGTH: usize = 77;

/// The longest `model_max_length` accepted: every prompt is padded to it,
/// so a file's number must not decide how much memory a prompt takes
/// (CLIP's is 77; long-context CLIP variants use a few hundred).
pub const MAX_MODEL_MAX_LENGTH: usize = 1 << 16;

/// A token that the tokenizer matches before the BPE model sees the text,
/// with the matching options of the Hugging Face tokenizers `AddedToken`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AddedTokenSpec {
    pub content: String,
    #[serde(default)]
    pub single_word: bool,
    #[serde(default)]
    pub lstrip: bool,
    #[serde(default)]
    pub rstrip: bool,
    /// Matched in the normalised text (lowercased, ...) rather than the raw
    /// one; absent: `!special`.
    #[serde(default)]
    pub normalized: Option<bool>,
    #[serde(default)]
    pub special: Option<bool>,
}

/// A special token as a config file gives it: a bare string, or an
/// `AddedToken` object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TokenValue {
    Plain(String),
    Added(AddedTokenSpec),
}

impl TokenValue {
    /// The token's text.
    pub fn content(&self) -> &str {
        match self {
            TokenValue::Plain(s) => s,
            TokenValue::Added(t) => &t.content,
        }
    }
}

/// The special tokens of transformers (`SPECIAL_TOKENS_ATTRIBUTES`), in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SpecialTokens {
    pub bos_token: Option<TokenValue>,
    pub eos_token: Option<TokenValue>,
    pub unk_token: Option<TokenValue>,
    pub sep_token: Option<TokenValue>,
    pub pad_token: Option<TokenValue>,
    pub cls_token: Option<TokenValue>,
    pub mask_token: Option<TokenValue>,
}

impl SpecialTokens {
    /// `(name, value)` in transformers' order: bos, eos, unk, sep, pad, cls, mask.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &TokenValue)> {
        [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("sep_token", &self.sep_token),
            ("pad_token", &self.pad_token),
            ("cls_token", &self.cls_token),
            ("mask_token", &self.mask_token),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
    }

    /// The tokens of `other` that are set replace those of `self`.
    fn override_with(&mut self, other: SpecialTokens) {
        let pairs = [
            (&mut self.bos_token, other.bos_token),
            (&mut self.eos_token, other.eos_token),
            (&mut self.unk_token, other.unk_token),
            (&mut self.sep_token, other.sep_token),
            (&mut self.pad_token, other.pad_token),
            (&mut self.cls_token, other.cls_token),
            (&mut self.mask_token, other.mask_token),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}

/// The keys of `tokenizer_config.json` this crate reads (others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
struct TokenizerConfigFile {
    #[serde(default)]
    tokenizer_class: Option<String>,
    /// A number; transformers writes a huge float-like integer when unset.
    #[serde(default)]
    model_max_length: Option<serde_json::Number>,
    #[serde(default)]
    added_tokens_decoder: Option<BTreeMap<String, AddedTokenSpec>>,
    #[serde(flatten)]
    special: SpecialTokens,
}

/// A `merges` entry of `tokenizer.json`: `"a b"` (tokenizers < 0.20) or
/// `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MergeEntry {
    Joined(String),
    Pair([String; 2]),
}

#[derive(Debug, Deserialize)]
struct TokenizerJsonModel {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    vocab: HashMap<String, u32>,
    merges: Vec<MergeEntry>,
}

#[derive(Debug, Deserialize)]
struct TokenizerJsonAddedToken {
    id: u32,
    #[serde(flatten)]
    token: AddedTokenSpec,
}

#[derive(Debug, Deserialize)]
struct TokenizerJson {
    model: TokenizerJsonModel,
    #[serde(default)]
    added_tokens: Vec<TokenizerJsonAddedToken>,
}

/// Everything a CLIP tokenizer is built from, read from one folder.
#[derive(Debug, Clone)]
pub struct TokenizerFiles {
    /// The tokenizer folder the files were read from.
    pub dir: PathBuf,
    /// The file the vocabulary came from (`tokenizer.json` or `vocab.json`).
    pub vocab_source: PathBuf,
    pub vocab: HashMap<String, u32>,
    /// The merges by rank.
    pub merges: Vec<(String, String)>,
    /// Added tokens by id, in id order (`added_tokens_decoder` of the
    /// config, or the `added_tokens` of `tokenizer.json`).
    pub added_tokens: Vec<(u32, AddedTokenSpec)>,
    pub special: SpecialTokens,
    /// `model_max_length` of the config, when it is set to a real length.
    pub model_max_length: Option<usize>,
}

impl TokenizerFiles {
    /// The tokenizer folder of `dir`: `dir` itself when it holds tokenizer
    /// files, else its `tokenizer/` subfolder (a diffusers pipeline folder).
    pub fn resolve_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        let fail = |reason: &str| Error::NotAModelFolder {
            path: dir.to_path_buf(),
            reason: reason.to_string(),
        };
        if !dir.is_dir() {
            return Err(fail("no such folder"));
        }
        let holds_tokenizer = |d: &Path| {
            [
                TOKENIZER_JSON,
                VOCAB_JSON,
                MERGES_TXT,
                TOKENIZER_CONFIG_JSON,
            ]
            .iter()
            .any(|f| d.join(f).is_file())
        };
        if holds_tokenizer(dir) {
            return Ok(dir.to_path_buf());
        }
        let sub = dir.join(TOKENIZER_SUBFOLDER);
        if sub.is_dir() {
            return Ok(sub);
        }
        if dir.join("model_index.json").is_file() {
            return Err(fail(
                "a pipeline folder (it has model_index.json) without a tokenizer/ subfolder",
            ));
        }
        Err(fail(
            "neither a tokenizer folder (tokenizer.json, or vocab.json + merges.txt) nor a \
             pipeline folder with tokenizer/",
        ))
    }

    /// Reads the tokenizer of `dir` (a tokenizer folder or a pipeline folder).
    pub fn read(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = Self::resolve_dir(dir)?;
        let config_path = dir.join(TOKENIZER_CONFIG_JSON);
        let config: TokenizerConfigFile = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            TokenizerConfigFile::default()
        };
        if let Some(class) = &config.tokenizer_class {
            if !matches!(class.as_str(), "CLIPTokenizer" | "CLIPTokenizerFast") {
                return Err(Error::Unsupported {
                    path: config_path,
                    key: "tokenizer_class".into(),
                    value: format!("{class:?}"),
                    reason: "only CLIP tokenizers (CLIPTokenizer, CLIPTokenizerFast) are supported"
                        .into(),
                });
            }
        }
        let model_max_length = match &config.model_max_length {
            None => None,
            Some(n) => match n.as_u64() {
                // transformers' "unset" is int(1e30); anything that large is no length
                Some(v) if v <= 1 << 32 => Some(v as usize),
                Some(_) => None,
                None if n.as_f64().is_some_and(|f| f > 1e9) => None,
                None => {
                    return Err(Error::invalid(
                        &config_path,
                        "model_max_length",
                        format!("expected a positive integer, found {n}"),
                    ))
                }
            },
        };
        if model_max_length.is_some_and(|n| n < 2) {
            return Err(Error::invalid(
                &config_path,
                "model_max_length",
                "must be at least 2 (room for the start and end tokens)",
            ));
        }
        if let Some(n) = model_max_length.filter(|&n| n > MAX_MODEL_MAX_LENGTH) {
            return Err(Error::invalid(
                &config_path,
                "model_max_length",
                format!(
                    "{n}: at most {MAX_MODEL_MAX_LENGTH} tokens are supported (every prompt is \
                     padded to this length; CLIP's is {CLIP_MAX_LENGTH})"
                ),
            ));
        }

        let tokenizer_json = dir.join(TOKENIZER_JSON);
        let (vocab_source, vocab, merges, json_added) = if tokenizer_json.is_file() {
            let (vocab, merges, added) = read_tokenizer_json(&tokenizer_json)?;
            (tokenizer_json, vocab, merges, added)
        } else {
            let vocab_path = dir.join(VOCAB_JSON);
            let merges_path = dir.join(MERGES_TXT);
            let missing: Vec<&str> = [(VOCAB_JSON, &vocab_path), (MERGES_TXT, &merges_path)]
                .iter()
                .filter(|(_, p)| !p.is_file())
                .map(|(n, _)| *n)
                .collect();
            if !missing.is_empty() {
                return Err(Error::NotAModelFolder {
                    path: dir.clone(),
                    reason: format!(
                        "no {TOKENIZER_JSON}, and {} missing: a CLIP tokenizer needs \
                         {TOKENIZER_JSON}, or {VOCAB_JSON} and {MERGES_TXT}",
                        missing.join(" and ")
                    ),
                });
            }
            let vocab: HashMap<String, u32> = read_json(&vocab_path)?;
            let merges = read_merges_txt(&merges_path)?;
            (vocab_path, vocab, merges, Vec::new())
        };

        // transformers (tokenization_utils_base, from_pretrained): the
        // config's added_tokens_decoder when present; otherwise the legacy
        // special_tokens_map.json overrides the config's special tokens and
        // tokenizer.json's added tokens are used.
        let mut special = config.special;
        let added_tokens = match config.added_tokens_decoder {
            Some(decoder) => {
                let mut added = Vec::new();
                for (id, token) in decoder {
                    let id = id.parse::<u32>().map_err(|_| {
                        Error::invalid(
                            &config_path,
                            format!("added_tokens_decoder.{id}"),
                            "expected a token id as the key",
                        )
                    })?;
                    added.push((id, token));
                }
                added
            }
            None => {
                let map_path = dir.join(SPECIAL_TOKENS_MAP_JSON);
                if map_path.is_file() {
                    special.override_with(read_json(&map_path)?);
                }
                json_added
            }
        };
        let mut added_tokens = added_tokens;
        added_tokens.sort_by_key(|(id, _)| *id);
        tracing::debug!(
            dir = %dir.display(),
            vocab = vocab.len(),
            merges = merges.len(),
            source = %vocab_source.display(),
            "read CLIP tokenizer files"
        );
        Ok(TokenizerFiles {
            dir,
            vocab_source,
            vocab,
            merges,
            added_tokens,
            special,
            model_max_length,
        })
    }
}

type VocabMergesAdded = (
    HashMap<String, u32>,
    Vec<(String, String)>,
    Vec<(u32, AddedTokenSpec)>,
);

fn read_tokenizer_json(path: &Path) -> Result<VocabMergesAdded> {
    let file: TokenizerJson = read_json(path)?;
    if let Some(kind) = file.model.kind.as_deref().filter(|k| *k != "BPE") {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            key: "model.type".into(),
            value: format!("{kind:?}"),
            reason: "a CLIP tokenizer is a BPE model".into(),
        });
    }
    let mut merges = Vec::with_capacity(file.model.merges.len());
    for (i, m) in file.model.merges.into_iter().enumerate() {
        merges.push(match m {
            MergeEntry::Pair([a, b]) => (a, b),
            MergeEntry::Joined(s) => split_merge(&s)
                .ok_or_else(|| Error::invalid(path, format!("model.merges[{i}]"), bad_merge(&s)))?,
        });
    }
    let added = file
        .added_tokens
        .into_iter()
        .map(|t| (t.id, t.token))
        .collect();
    Ok((file.model.vocab, merges, added))
}

/// `merges.txt`: an optional `#version` line, then one `left right` pair a
/// line (as the tokenizers library reads it: exactly two parts).
fn read_merges_txt(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let pair = split_merge(line)
            .ok_or_else(|| Error::invalid(path, format!("line {}", i + 1), bad_merge(line)))?;
        merges.push(pair);
    }
    Ok(merges)
}

fn split_merge(s: &str) -> Option<(String, String)> {
    let mut parts = s.split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
            Some((a.to_string(), b.to_string()))
        }
        _ => None,
    }
}

fn bad_merge(s: &str) -> String {
    format!("expected a merge of two tokens separated by one space, found {s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn merges_lines_must_be_pairs() {
        assert_eq!(split_merge("a b"), Some(("a".into(), "b".into())));
        assert_eq!(split_merge("a"), None);
        assert_eq!(split_merge("a b c"), None);
        assert_eq!(split_merge(" b"), None);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(MERGES_TXT);
        std::fs::write(&path, "#version: 0.2\nt h\nth e</w>\nbroken\n").unwrap();
        let err = read_merges_txt(&path).unwrap_err().to_string();
        assert!(
            err.contains("merges.txt") && err.contains("line 4") && err.contains("broken"),
            "{err}"
        );
    }

    #[test]
    fn special_tokens_map_overrides_unless_the_config_has_added_tokens() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            &[
                (VOCAB_JSON, r#"{"a": 0, "!": 1, "<|endoftext|>": 2}"#),
                (MERGES_TXT, "#version: 0.2\n"),
                (
                    TOKENIZER_CONFIG_JSON,
                    r#"{"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 1000000000000000019884624838656}"#,
                ),
                (
                    SPECIAL_TOKENS_MAP_JSON,
                    r#"{"pad_token": {"content": "!", "normalized": false}}"#,
                ),
            ],
        );
        let files = TokenizerFiles::read(tmp.path()).unwrap();
        assert_eq!(files.special.pad_token.as_ref().unwrap().content(), "!");
        assert_eq!(
            files.special.eos_token,
            Some(TokenValue::Plain("<|endoftext|>".into()))
        );
        assert_eq!(files.model_max_length, None);

        write(
            tmp.path(),
            &[(
                TOKENIZER_CONFIG_JSON,
                r#"{"pad_token": "<|endoftext|>", "model_max_length": 77,
                    "added_tokens_decoder": {"2": {"content": "<|endoftext|>", "special": true}}}"#,
            )],
        );
        let files = TokenizerFiles::read(tmp.path()).unwrap();
        assert_eq!(
            files.special.pad_token.as_ref().unwrap().content(),
            "<|endoftext|>"
        );
        assert_eq!(files.added_tokens.len(), 1);
        assert_eq!(files.model_max_length, Some(77));
    }

    #[test]
    fn folders_resolve_or_say_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let err = TokenizerFiles::read(tmp.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such folder"), "{err}");
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("neither a tokenizer folder"), "{err}");
        write(tmp.path(), &[("model_index.json", "{}")]);
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("without a tokenizer/ subfolder"), "{err}");
        let tok = tmp.path().join(TOKENIZER_SUBFOLDER);
        std::fs::create_dir(&tok).unwrap();
        write(&tok, &[(VOCAB_JSON, "{}")]);
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer") && err.contains("merges.txt missing"),
            "{err}"
        );
        write(&tok, &[(MERGES_TXT, ""), (VOCAB_JSON, r#"{"a": "zero"}"#)]);
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("vocab.json") && err.contains("field `a`"),
            "{err}"
        );
        write(&tok, &[(VOCAB_JSON, r#"{"a": 0"#)]);
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("vocab.json") && err.contains("not valid JSON"),
            "{err}"
        );
        write(
            &tok,
            &[(
                TOKENIZER_CONFIG_JSON,
                r#"{"tokenizer_class": "T5Tokenizer"}"#,
            )],
        );
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer_config.json") && err.contains("T5Tokenizer"),
            "{err}"
        );
    }

    #[test]
    fn tokenizer_json_merges_in_both_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
            "merges": ["a b", ["a", "b"]]},
            "added_tokens": [{"id": 2, "content": "ab", "special": true, "normalized": false,
                              "lstrip": false, "rstrip": false, "single_word": false}]}"#;
        write(tmp.path(), &[(TOKENIZER_JSON, json)]);
        let files = TokenizerFiles::read(tmp.path()).unwrap();
        assert_eq!(files.merges, vec![("a".into(), "b".into()); 2]);
        assert_eq!(files.added_tokens[0].0, 2);
        assert_eq!(files.vocab_source, tmp.path().join(TOKENIZER_JSON));
        write(
            tmp.path(),
            &[(
                TOKENIZER_JSON,
                r#"{"model": {"type": "Unigram", "vocab": {}, "merges": []}}"#,
            )],
        );
        let err = TokenizerFiles::read(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.type") && err.contains("Unigram"),
            "{err}"
        );
    }
}
