//! Parity with transformers' `CLIPTokenizer` on the references of
//! `scripts/gen_text_fixtures.py`: the real CLIP vocabulary (SD 1.x files,
//! and the same with SD 2.x's pad token `!`) and the two tiny pipelines
//! (vocab.json + merges.txt; tokenizer.json). For every prompt: the padded
//! ids and mask, the untruncated ids, their tokens and decodings, and the
//! text diffusers reports as truncated.

mod common;

use std::io::Read;
use std::path::Path;

use common::fixtures;
use serde_json::Value;
use text::ClipTokenizer;

/// The real-vocabulary folder, unpacked from its committed gzip files into `to`.
fn unpack_clip_vocab(to: &Path, pad: Option<&str>) {
    let src = fixtures().join("clip-vocab");
    for name in ["vocab.json", "merges.txt"] {
        let file = std::fs::File::open(src.join(format!("{name}.gz"))).unwrap_or_else(|e| {
            panic!("{name}.gz: {e}; run `cargo xtask py scripts/gen_text_fixtures.py`")
        });
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut text)
            .unwrap();
        std::fs::write(to.join(name), text).unwrap();
    }
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(src.join(name)).unwrap()).unwrap();
        if let Some(pad) = pad {
            v["pad_token"] = pad.into();
        }
        std::fs::write(to.join(name), v.to_string()).unwrap();
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn check(case: &str, tok: &ClipTokenizer, refs: &Value) {
    for r in refs.as_array().unwrap() {
        let prompt = r["prompt"].as_str().unwrap();
        let what = format!("{case}: {prompt:?}");
        let e = tok.encode(prompt).unwrap();
        assert_eq!(e.ids, ids(&r["input_ids"]), "{what}: input_ids");
        assert_eq!(
            e.attention_mask,
            ids(&r["attention_mask"]),
            "{what}: attention_mask"
        );
        assert_eq!(
            e.truncated.as_deref(),
            r["truncated"].as_str(),
            "{what}: truncated"
        );
        let full = tok.encode_unpadded(prompt).unwrap();
        assert_eq!(full, ids(&r["untruncated_ids"]), "{what}: untruncated ids");
        let tokens: Vec<String> = r["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        assert_eq!(tok.tokens(&full).unwrap(), tokens, "{what}: tokens");
        assert_eq!(
            tok.decode(&full, false).unwrap(),
            r["decoded"].as_str().unwrap(),
            "{what}: decode"
        );
        assert_eq!(
            tok.decode(&full, true).unwrap(),
            r["decoded_skip_special"].as_str().unwrap(),
            "{what}: decode, skipping special tokens"
        );
    }
}

fn references() -> Value {
    let path = fixtures().join("tokens.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask py scripts/gen_text_fixtures.py`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn real_vocabulary_matches_transformers() {
    let refs = references();
    let tmp = tempfile::tempdir().unwrap();
    unpack_clip_vocab(tmp.path(), None);
    let tok = ClipTokenizer::from_folder(tmp.path()).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    assert_eq!(
        (tok.bos_token_id(), tok.eos_token_id(), tok.pad_token_id()),
        (49406, 49407, 49407)
    );
    // the known vector of transformers' CLIP tokenizer tests
    assert_eq!(
        tok.encode_unpadded("this is a test string of text")
            .unwrap(),
        [49406, 589, 533, 320, 1628, 9696, 539, 4160, 49407]
    );
    check("clip-vocab", &tok, &refs["clip-vocab"]);

    let tmp = tempfile::tempdir().unwrap();
    unpack_clip_vocab(tmp.path(), Some("!"));
    let tok = ClipTokenizer::from_folder(tmp.path()).unwrap();
    assert_eq!(tok.pad_token_id(), 0);
    check("clip-vocab, pad !", &tok, &refs["clip-vocab-pad-!"]);
}

#[test]
fn tiny_pipelines_match_transformers() {
    let refs = references();
    for case in ["sd1-tiny", "sd2-tiny"] {
        // the pipeline folder itself: its tokenizer/ is used
        let tok = ClipTokenizer::from_folder(fixtures().join(case)).unwrap();
        assert_eq!(tok.model_max_length(), 77);
        check(case, &tok, &refs[case]);
    }
    let sd2 = ClipTokenizer::from_folder(fixtures().join("sd2-tiny/tokenizer")).unwrap();
    assert_eq!((sd2.pad_token(), sd2.pad_token_id()), ("!", 0));
}
