//! [`ClipTokenizer`]: CLIP's byte-level BPE tokenizer, as transformers'
//! `CLIPTokenizer` builds it (transformers 5; its `CLIPTokenizerFast` before).
//!
//! The pipeline is the same, piece for piece, on the same Hugging Face
//! tokenizers code: NFC normalisation, every run of whitespace replaced by
//! one space, lowercasing; split on CLIP's pattern (the start and end
//! tokens, contractions, runs of letters, single digits, runs of other
//! non-space characters); GPT-2's byte-to-character table; BPE with `</w>`
//! at the end of each word. Special tokens (`<|startoftext|>`,
//! `<|endoftext|>`, the pad token) are matched in the text before it is
//! split, with the options their files give them, and added in
//! transformers' order (a pad token given as a bare string is matched in
//! the raw text, so SD 2.x's pad `!` turns every `!` of a prompt into the
//! pad id, as it does in transformers).
//!
//! [`ClipTokenizer::encode`] gives what diffusers feeds the text encoder:
//! `[BOS] tokens [EOS]`, padded with the pad token to `model_max_length`
//! (77), or cut to it keeping EOS last; the cut words are returned so the
//! caller can warn as diffusers does.

use std::path::Path;

use tch::{Device, Tensor};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Error, Result};
use crate::tokenizer_files::{
    AddedTokenSpec, SpecialTokens, TokenValue, TokenizerFiles, CLIP_MAX_LENGTH,
    MAX_MODEL_MAX_LENGTH, MERGES_TXT, TOKENIZER_CONFIG_JSON, VOCAB_JSON,
};

/// CLIP's split pattern (transformers 5 `CLIPTokenizer`).
pub const CLIP_SPLIT_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// The suffix of a BPE token that ends a word.
pub const END_OF_WORD_SUFFIX: &str = "</w>";
/// transformers' defaults for CLIP's special tokens.
const DEFAULT_BOS: &str = "<|startoftext|>";
const DEFAULT_EOS: &str = "<|endoftext|>";

/// One prompt, ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[BOS] tokens [EOS] pad...`, exactly `model_max_length` ids.
    pub ids: Vec<i64>,
    /// 1 for the BOS, token and EOS positions, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// The text of the tokens cut off to fit (decoded as diffusers decodes
    /// it for its warning), or `None` when nothing was cut.
    pub truncated: Option<String>,
}

impl Encoding {
    /// The number of ids that are not padding.
    pub fn len_unpadded(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m != 0).count()
    }

    /// The diffusers warning for a cut prompt, or `None`.
    pub fn truncation_warning(&self) -> Option<String> {
        self.truncated.as_ref().map(|t| {
            format!(
                "The following part of your input was truncated because CLIP can only handle \
                 sequences up to {} tokens: {t}",
                self.ids.len()
            )
        })
    }
}

/// CLIP's tokenizer, read from a transformers tokenizer folder.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    pad_token: String,
    model_max_length: usize,
}

impl ClipTokenizer {
    /// Reads the tokenizer of `dir`: a tokenizer folder (`tokenizer.json`,
    /// or `vocab.json` + `merges.txt`, with `tokenizer_config.json` and
    /// `special_tokens_map.json`) or a diffusers pipeline folder with a
    /// `tokenizer/` subfolder.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_files(TokenizerFiles::read(dir)?)
    }

    /// Builds the tokenizer from files already read.
    pub fn from_files(files: TokenizerFiles) -> Result<Self> {
        let config_path = files.dir.join(TOKENIZER_CONFIG_JSON);
        let special = with_clip_defaults(&files.special);
        let content = |v: &Option<TokenValue>| v.as_ref().map_or("", |t| t.content()).to_string();
        let (bos, eos, unk, pad) = (
            content(&special.bos_token),
            content(&special.eos_token),
            content(&special.unk_token),
            content(&special.pad_token),
        );
        let id_of = |field: &str, token: &str| {
            files.vocab.get(token).copied().ok_or_else(|| {
                Error::invalid(
                    &files.vocab_source,
                    field,
                    format!(
                        "the {field} {token:?} (from {}) is not in the vocabulary",
                        config_path.display()
                    ),
                )
            })
        };
        let bos_id = id_of("bos_token", &bos)?;
        let eos_id = id_of("eos_token", &eos)?;
        let pad_id = id_of("pad_token", &pad)?;

        check_merges(&files)?;
        let vocab: Vocab = files.vocab.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, files.merges.clone())
            .unk_token(unk)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(END_OF_WORD_SUFFIX.into())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::invalid(&files.vocab_source, "merges", e.to_string()))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_normalizer(Some(NormalizerSequence::new(vec![
                NFC.into(),
                Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                    .map_err(Error::tokenizer)?
                    .into(),
                Lowercase.into(),
            ])))
            .map_err(Error::tokenizer)?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_SPLIT_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(Error::tokenizer)?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_post_processor(Some(
            RobertaProcessing::new((eos.clone(), eos_id), (bos.clone(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        inner
            .add_tokens(added_tokens_in_transformers_order(
                &files.added_tokens,
                &special,
            ))
            .map_err(Error::tokenizer)?;

        let model_max_length = files.model_max_length.unwrap_or(CLIP_MAX_LENGTH);
        tracing::debug!(
            dir = %files.dir.display(),
            vocab = inner.get_vocab_size(true),
            bos_id, eos_id, pad_id, model_max_length,
            "CLIP tokenizer ready"
        );
        Ok(ClipTokenizer {
            inner,
            bos_id,
            eos_id,
            pad_id,
            pad_token: pad,
            model_max_length,
        })
    }

    /// The same tokenizer padding and truncating to `n` tokens instead of
    /// `model_max_length` (at least 2).
    pub fn with_model_max_length(mut self, n: usize) -> Result<Self> {
        if n < 2 {
            return Err(Error::Input(format!(
                "model_max_length {n}: must be at least 2 (room for the start and end tokens)"
            )));
        }
        if n > MAX_MODEL_MAX_LENGTH {
            return Err(Error::Input(format!(
                "model_max_length {n}: at most {MAX_MODEL_MAX_LENGTH} tokens are supported"
            )));
        }
        self.model_max_length = n;
        Ok(self)
    }

    /// `[BOS] tokens [EOS]` of `prompt`, neither padded nor cut.
    pub fn encode_unpadded(&self, prompt: &str) -> Result<Vec<i64>> {
        let enc = self.inner.encode(prompt, true).map_err(Error::tokenizer)?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// `prompt` as the text encoder takes it: `[BOS] tokens [EOS]` padded
    /// with the pad token to `model_max_length`, or cut to it with EOS kept
    /// last (transformers' `padding="max_length", truncation=True`).
    pub fn encode(&self, prompt: &str) -> Result<Encoding> {
        let full = self.encode_unpadded(prompt)?;
        let n = self.model_max_length;
        if full.len() > n {
            // diffusers: batch_decode(untruncated_ids[:, max_length - 1 : -1])
            let truncated = self.decode(&full[n - 1..full.len() - 1], false)?;
            let mut ids = full[..n - 1].to_vec();
            ids.push(i64::from(self.eos_id));
            return Ok(Encoding {
                ids,
                attention_mask: vec![1; n],
                truncated: Some(truncated),
            });
        }
        let real = full.len();
        let mut ids = full;
        ids.resize(n, i64::from(self.pad_id));
        let mut attention_mask = vec![1; real];
        attention_mask.resize(n, 0);
        Ok(Encoding {
            ids,
            attention_mask,
            truncated: None,
        })
    }

    /// [`ClipTokenizer::encode`] of each prompt.
    pub fn encode_batch<S: AsRef<str>>(&self, prompts: &[S]) -> Result<Vec<Encoding>> {
        prompts.iter().map(|p| self.encode(p.as_ref())).collect()
    }

    /// The text of `ids` as transformers decodes it: the byte-level tokens
    /// joined, each `</w>` a space, trimmed; special tokens (start, end,
    /// pad) left out with `skip_special_tokens`.
    pub fn decode(&self, ids: &[i64], skip_special_tokens: bool) -> Result<String> {
        let ids = self.ids_u32(ids)?;
        let text = self
            .inner
            .decode(&ids, skip_special_tokens)
            .map_err(Error::tokenizer)?;
        Ok(text.replace(END_OF_WORD_SUFFIX, " ").trim().to_string())
    }

    /// The token of each id, as the vocabulary spells it (byte-level
    /// characters, `</w>` at word ends: transformers' `convert_ids_to_tokens`).
    pub fn tokens(&self, ids: &[i64]) -> Result<Vec<String>> {
        self.ids_u32(ids)?
            .into_iter()
            .map(|id| {
                self.inner
                    .id_to_token(id)
                    .ok_or_else(|| Error::Input(format!("token id {id} is not in the vocabulary")))
            })
            .collect()
    }

    /// The id of a token, as the vocabulary spells it.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(i64::from)
    }

    fn ids_u32(&self, ids: &[i64]) -> Result<Vec<u32>> {
        let size = self.vocab_size();
        ids.iter()
            .map(|&id| {
                u32::try_from(id)
                    .ok()
                    .filter(|&i| (i as usize) < size)
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "token id {id} is outside the vocabulary (0..{size})"
                        ))
                    })
            })
            .collect()
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of `<|startoftext|>` (or the folder's `bos_token`).
    pub fn bos_token_id(&self) -> i64 {
        i64::from(self.bos_id)
    }

    /// The id of `<|endoftext|>` (or the folder's `eos_token`).
    pub fn eos_token_id(&self) -> i64 {
        i64::from(self.eos_id)
    }

    /// The id prompts are padded with (EOS for SD 1.x, `!` = 0 for SD 2.x).
    pub fn pad_token_id(&self) -> i64 {
        i64::from(self.pad_id)
    }

    /// The pad token's text.
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }

    /// The length every [`Encoding`] has (77 for CLIP).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// The Hugging Face tokenizer underneath (with the post-processor that
    /// adds BOS and EOS, no padding or truncation).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// `[batch, model_max_length]` int64 tensors of the ids and attention
/// masks of `encodings` (all of one length, as [`ClipTokenizer::encode`]
/// makes them), on `device`.
pub fn batch_tensors(encodings: &[Encoding], device: Device) -> Result<(Tensor, Tensor)> {
    let Some(first) = encodings.first() else {
        return Err(Error::Input("no encodings to batch".into()));
    };
    let len = first.ids.len();
    if let Some((i, e)) = encodings
        .iter()
        .enumerate()
        .find(|(_, e)| e.ids.len() != len)
    {
        return Err(Error::Input(format!(
            "encoding {i} has {} ids, encoding 0 has {len}",
            e.ids.len()
        )));
    }
    let shape = [encodings.len() as i64, len as i64];
    let ids: Vec<i64> = encodings
        .iter()
        .flat_map(|e| e.ids.iter().copied())
        .collect();
    let mask: Vec<i64> = encodings
        .iter()
        .flat_map(|e| e.attention_mask.iter().copied())
        .collect();
    let ids = Tensor::from_slice(&ids).reshape(shape).to_device(device);
    let mask = Tensor::from_slice(&mask).reshape(shape).to_device(device);
    Ok((ids, mask))
}

/// Checks that both tokens of every merge and the token they merge into are
/// in the vocabulary, naming the merge and the file it came from (the
/// tokenizers library checks the first two, and panics on a merge whose
/// result is longer than every token of the vocabulary).
fn check_merges(files: &TokenizerFiles) -> Result<()> {
    let source = if files.vocab_source.ends_with(VOCAB_JSON) {
        files.dir.join(MERGES_TXT)
    } else {
        files.vocab_source.clone()
    };
    for (i, (a, b)) in files.merges.iter().enumerate() {
        let merged = format!("{a}{b}");
        let missing = [a, b, &merged]
            .into_iter()
            .find(|t| !files.vocab.contains_key(t.as_str()))
            .cloned();
        if let Some(missing) = missing {
            return Err(Error::invalid(
                &source,
                format!("merge {} ({a:?} {b:?})", i + 1),
                format!(
                    "{missing:?} is not in the vocabulary ({})",
                    files.vocab_source.display()
                ),
            ));
        }
    }
    Ok(())
}

/// The special tokens of the files, with `CLIPTokenizer.__init__`'s
/// defaults for those they leave out: `<|startoftext|>` for bos,
/// `<|endoftext|>` for eos, unk and pad.
fn with_clip_defaults(special: &SpecialTokens) -> SpecialTokens {
    let or = |v: &Option<TokenValue>, default: &str| {
        Some(
            v.clone()
                .unwrap_or_else(|| TokenValue::Plain(default.into())),
        )
    };
    SpecialTokens {
        bos_token: or(&special.bos_token, DEFAULT_BOS),
        eos_token: or(&special.eos_token, DEFAULT_EOS),
        unk_token: or(&special.unk_token, DEFAULT_EOS),
        pad_token: or(&special.pad_token, DEFAULT_EOS),
        ..special.clone()
    }
}

/// The added tokens of transformers' `TokenizersBackend.__init__`: those of
/// the files by id, then each special token (bos, eos, unk, sep, pad, cls,
/// mask) whose text is not among them yet. A special token given as a bare
/// string is matched in the raw text (`AddedToken(token, special=True)`);
/// one that is added twice with different options takes the later options,
/// as the tokenizers library does.
fn added_tokens_in_transformers_order(
    from_files: &[(u32, AddedTokenSpec)],
    special: &SpecialTokens,
) -> Vec<AddedToken> {
    let from_files: Vec<TokenValue> = from_files
        .iter()
        .map(|(_, t)| TokenValue::Added(t.clone()))
        .collect();
    let encoder: Vec<&str> = from_files.iter().map(TokenValue::content).collect();
    let mut to_add = from_files.clone();
    for (_, value) in special.iter() {
        // Python: `str(value) not in encoder and value not in tokens_to_add`
        // (a string never equals an AddedToken there).
        if encoder.contains(&value.content()) || to_add.contains(value) {
            continue;
        }
        to_add.push(value.clone());
    }
    let named = |content: &str| special.iter().any(|(_, s)| s.content() == content);
    to_add
        .into_iter()
        .map(|v| match v {
            TokenValue::Plain(s) => AddedToken::from(s, true),
            TokenValue::Added(t) => {
                let is_named = named(&t.content);
                added_token(&t, is_named)
            }
        })
        .collect()
}

fn added_token(t: &AddedTokenSpec, named_special: bool) -> AddedToken {
    let special = t.special.unwrap_or(false) || named_special;
    AddedToken::from(t.content.clone(), special)
        .single_word(t.single_word)
        .lstrip(t.lstrip)
        .rstrip(t.rstrip)
        .normalized(t.normalized.unwrap_or(!special))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with a 10-token vocabulary: bytes are not needed for ASCII
    /// letters that merge.
    fn tiny(pad: &str) -> (tempfile::TempDir, ClipTokenizer) {
        let tmp = tempfile::tempdir().unwrap();
        let vocab = r#"{"!": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "ab": 6,
                        "<|startoftext|>": 7, "<|endoftext|>": 8, "!</w>": 9}"#;
        std::fs::write(tmp.path().join("vocab.json"), vocab).unwrap();
        std::fs::write(
            tmp.path().join("merges.txt"),
            "#version: 0.2\na b</w>\na b\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("tokenizer_config.json"),
            format!(r#"{{"model_max_length": 6, "pad_token": "{pad}"}}"#),
        )
        .unwrap();
        let tok = ClipTokenizer::from_folder(tmp.path()).unwrap();
        (tmp, tok)
    }

    #[test]
    fn pads_with_the_pad_token_and_masks() {
        let (_tmp, tok) = tiny("<|endoftext|>");
        let e = tok.encode("AB  a").unwrap();
        assert_eq!(e.ids, vec![7, 5, 3, 8, 8, 8]);
        assert_eq!(e.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(e.truncated, None);
        assert_eq!(e.len_unpadded(), 4);
        let (_tmp, tok) = tiny("!");
        assert_eq!(tok.pad_token_id(), 0);
        assert_eq!(tok.encode("").unwrap().ids, vec![7, 8, 0, 0, 0, 0]);
        // a bare-string pad token is matched in the raw text
        assert_eq!(tok.encode("ab!").unwrap().ids, vec![7, 5, 0, 8, 0, 0]);
    }

    #[test]
    fn truncation_keeps_eos_last_and_returns_the_rest() {
        let (_tmp, tok) = tiny("<|endoftext|>");
        let e = tok.encode("ab a b ab b a").unwrap();
        assert_eq!(e.ids, vec![7, 5, 3, 4, 5, 8]);
        assert_eq!(e.attention_mask, vec![1; 6]);
        assert_eq!(e.truncated.as_deref(), Some("b a"));
        let warning = e.truncation_warning().unwrap();
        assert!(warning.ends_with("up to 6 tokens: b a"), "{warning}");
        // exactly full: nothing cut
        let e = tok.encode("ab a b ab").unwrap();
        assert_eq!(e.truncated, None);
        let err = tok.with_model_max_length(1).unwrap_err().to_string();
        assert!(err.contains("at least 2"), "{err}");
    }

    #[test]
    fn decode_and_tokens() {
        let (_tmp, tok) = tiny("<|endoftext|>");
        let ids = tok.encode_unpadded("ab a").unwrap();
        assert_eq!(
            tok.tokens(&ids).unwrap(),
            ["<|startoftext|>", "ab</w>", "a</w>", "<|endoftext|>"]
        );
        assert_eq!(tok.decode(&ids, true).unwrap(), "ab a");
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            "<|startoftext|>ab a <|endoftext|>"
        );
        let err = tok.decode(&[99], false).unwrap_err().to_string();
        assert!(
            err.contains("99") && err.contains("outside the vocabulary"),
            "{err}"
        );
        let (ids, mask) =
            batch_tensors(&tok.encode_batch(&["a", "b"]).unwrap(), Device::Cpu).unwrap();
        assert_eq!(ids.size(), [2, 6]);
        assert_eq!(mask.sum(tch::Kind::Int64).int64_value(&[]), 6);
    }

    #[test]
    fn a_special_token_missing_from_the_vocabulary_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("vocab.json"),
            r#"{"a": 0, "<|endoftext|>": 1}"#,
        )
        .unwrap();
        std::fs::write(tmp.path().join("merges.txt"), "").unwrap();
        let err = ClipTokenizer::from_folder(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vocab.json")
                && err.contains("bos_token")
                && err.contains("<|startoftext|>"),
            "{err}"
        );
        std::fs::write(
            tmp.path().join("vocab.json"),
            r#"{"a": 0, "<|endoftext|>": 1, "<|startoftext|>": 2}"#,
        )
        .unwrap();
        std::fs::write(tmp.path().join("merges.txt"), "a q\n").unwrap();
        let err = ClipTokenizer::from_folder(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("merges.txt: merge 1 (\"a\" \"q\")")
                && err.contains("\"q\" is not in the vocabulary")
                && err.contains("vocab.json"),
            "{err}"
        );
    }

    /// A merge of two tokens of the vocabulary whose result is longer than
    /// every token of it (and not in it) makes the tokenizers library (0.23)
    /// index past a buffer: it is named before the library sees it.
    #[test]
    fn a_merge_into_a_token_missing_from_the_vocabulary_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        // "<|startoftext|>" is the longest token, 15 bytes; the merge, 20
        let vocab =
            r#"{"abcdefghij": 0, "klmnopqrst": 1, "<|endoftext|>": 2, "<|startoftext|>": 3}"#;
        std::fs::write(tmp.path().join("vocab.json"), vocab).unwrap();
        std::fs::write(
            tmp.path().join("merges.txt"),
            "#version: 0.2\nabcdefghij klmnopqrst\n",
        )
        .unwrap();
        let err = ClipTokenizer::from_folder(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("merges.txt: merge 1 (\"abcdefghij\" \"klmnopqrst\")")
                && err.contains("\"abcdefghijklmnopqrst\" is not in the vocabulary"),
            "{err}"
        );
        // the same in tokenizer.json
        std::fs::write(
            tmp.path().join("tokenizer.json"),
            format!(
                r#"{{"model": {{"vocab": {vocab}, "merges": [["abcdefghij", "klmnopqrst"]]}}}}"#
            ),
        )
        .unwrap();
        let err = ClipTokenizer::from_folder(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer.json: merge 1") && err.contains("\"abcdefghijklmnopqrst\""),
            "{err}"
        );
    }

    /// Every prompt is padded to `model_max_length`: a file cannot make
    /// that gigabytes.
    #[test]
    fn model_max_length_is_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("vocab.json"),
            r#"{"a": 0, "<|endoftext|>": 1, "<|startoftext|>": 2}"#,
        )
        .unwrap();
        std::fs::write(tmp.path().join("merges.txt"), "").unwrap();
        for (n, ok) in [("65536", true), ("4294967296", false), ("1e30", true)] {
            std::fs::write(
                tmp.path().join("tokenizer_config.json"),
                format!(r#"{{"model_max_length": {n}}}"#),
            )
            .unwrap();
            assert_eq!(ClipTokenizer::from_folder(tmp.path()).is_ok(), ok, "{n}");
        }
        let err = ClipTokenizer::from_folder(tmp.path())
            .and_then(|t| t.with_model_max_length(1 << 20))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 65536"), "{err}");
        std::fs::write(
            tmp.path().join("tokenizer_config.json"),
            r#"{"model_max_length": 4294967296}"#,
        )
        .unwrap();
        let err = ClipTokenizer::from_folder(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tokenizer_config.json: model_max_length: 4294967296: at most 65536"),
            "{err}"
        );
    }
}
