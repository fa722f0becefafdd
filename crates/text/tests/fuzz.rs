//! Hostile bytes into the text side's loaders: the files of a tokenizer
//! folder (`tokenizer.json`, `vocab.json`, `merges.txt`,
//! `tokenizer_config.json`, `special_tokens_map.json`) through
//! `ClipTokenizer::from_folder` and a few prompts; the text encoder's
//! `config.json` through `ClipTextConfig` and `ClipTextModel::load`; and
//! its `model.safetensors` through `ClipTextModel::load` and a forward
//! pass. Errors are fine; a panic, an abort or an allocation the files
//! cannot justify is a failure. `LMZH_FUZZ_CASES` sets the number of inputs
//! (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use text::tokenizer_files::{
    MERGES_TXT, SPECIAL_TOKENS_MAP_JSON, TOKENIZER_CONFIG_JSON, TOKENIZER_JSON, VOCAB_JSON,
};
use text::{batch_tensors, ClipTextConfig, ClipTextModel, ClipTokenizer, DType};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The files of a tokenizer folder, in the order a fuzz input lists them.
const TOKENIZER_FILES: [&str; 5] = [
    TOKENIZER_JSON,
    VOCAB_JSON,
    MERGES_TXT,
    TOKENIZER_CONFIG_JSON,
    SPECIAL_TOKENS_MAP_JSON,
];

/// A folder as one input: each file as a NUL byte, its name, a newline and
/// its bytes (a byte no tokenizer file holds, so mutations mostly stay
/// inside one file).
fn pack(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, bytes) in files {
        out.push(0);
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(bytes);
    }
    out
}

/// Writes the files of a packed input into `dir` (removing those it does
/// not have; unknown names are ignored, a repeated name's last bytes win).
fn unpack_into(dir: &Path, input: &[u8]) {
    for name in TOKENIZER_FILES {
        let _ = std::fs::remove_file(dir.join(name));
    }
    for part in input.split(|&b| b == 0).skip(1) {
        let (name, bytes) = match part.iter().position(|&b| b == b'\n') {
            Some(at) => (&part[..at], &part[at + 1..]),
            None => (part, &[][..]),
        };
        if let Some(name) = TOKENIZER_FILES.iter().find(|n| n.as_bytes() == name) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// A vocabulary of CLIP's shape, small: letters and a few marks, each also
/// as a word end, the merges of a few words (and of two long tokens), the
/// start and end tokens.
fn tiny_vocab_and_merges() -> (Value, Vec<(String, String)>) {
    let mut tokens: Vec<String> = Vec::new();
    for c in "abcdefghijklmnopqrstuvwxyz0123456789!.,'".chars() {
        tokens.push(c.to_string());
        tokens.push(format!("{c}</w>"));
    }
    let merges: Vec<(String, String)> = [
        ("t", "h"),
        ("th", "e</w>"),
        ("a", "n</w>"),
        ("o", "f</w>"),
        ("p", "h"),
        ("o", "t"),
        ("ot", "o</w>"),
        ("ph", "oto</w>"),
        ("h", "o"),
        ("ho", "r"),
        ("s", "e</w>"),
        ("hor", "se</w>"),
        // longer than the start token together: a mutation that drops the
        // merged token from the vocabulary reaches the tokenizers library's
        // merge buffer
        ("abcdefghij", "klmnopqrst"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    tokens.extend(["abcdefghij".into(), "klmnopqrst".into()]);
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push("<|startoftext|>".into());
    tokens.push("<|endoftext|>".into());
    let vocab: serde_json::Map<String, Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, json!(i)))
        .collect();
    (Value::Object(vocab), merges)
}

fn tokenizer_seeds() -> Vec<Vec<u8>> {
    let (vocab, merges) = tiny_vocab_and_merges();
    let merges_txt = std::iter::once("#version: 0.2".to_string())
        .chain(merges.iter().map(|(a, b)| format!("{a} {b}")))
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes();
    let vocab_json = vocab.to_string().into_bytes();
    let config = json!({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 8,
        "bos_token": {"content": "<|startoftext|>", "normalized": true, "__type": "AddedToken"},
        "eos_token": "<|endoftext|>",
        "pad_token": "!",
        "unk_token": "<|endoftext|>"
    });
    let with_decoder = json!({
        "model_max_length": 1000000000000000019884624838656u128 as f64,
        "added_tokens_decoder": {
            "0": {"content": "!", "special": true, "normalized": false},
            "1000": {"content": "<|endoftext|>", "special": true, "lstrip": true,
                     "rstrip": true, "single_word": true}
        },
        "pad_token": "!"
    });
    let special_map = json!({
        "pad_token": {"content": "<|endoftext|>", "normalized": false},
        "unk_token": "<|endoftext|>",
        "mask_token": "m"
    });
    let pairs: Vec<Value> = merges.iter().map(|(a, b)| json!([a, b])).collect();
    let joined: Vec<Value> = merges
        .iter()
        .map(|(a, b)| json!(format!("{a} {b}")))
        .collect();
    let tokenizer_json = |merges: Vec<Value>| {
        json!({
            "model": {"type": "BPE", "vocab": vocab.clone(), "merges": merges},
            "added_tokens": [
                {"id": 4294967295u32, "content": "<|endoftext|>", "special": true},
                {"id": 3, "content": "b c", "special": false, "lstrip": true}
            ]
        })
        .to_string()
        .into_bytes()
    };
    let mut seeds = vec![
        pack(&[
            (VOCAB_JSON, vocab_json.clone()),
            (MERGES_TXT, merges_txt.clone()),
            (TOKENIZER_CONFIG_JSON, config.to_string().into_bytes()),
            (
                SPECIAL_TOKENS_MAP_JSON,
                special_map.to_string().into_bytes(),
            ),
        ]),
        pack(&[(VOCAB_JSON, vocab_json), (MERGES_TXT, merges_txt)]),
        pack(&[
            (TOKENIZER_JSON, tokenizer_json(pairs)),
            (TOKENIZER_CONFIG_JSON, with_decoder.to_string().into_bytes()),
        ]),
        pack(&[
            (TOKENIZER_JSON, tokenizer_json(joined)),
            (
                SPECIAL_TOKENS_MAP_JSON,
                special_map.to_string().into_bytes(),
            ),
        ]),
    ];
    // SD 1.x's files (a cut-down CLIP vocabulary), as they are.
    let sd1 = fixtures().join("sd1-tiny/tokenizer");
    let read = |name: &str| std::fs::read(sd1.join(name)).unwrap();
    seeds.push(pack(
        &TOKENIZER_FILES[1..]
            .iter()
            .map(|&n| (n, read(n)))
            .collect::<Vec<_>>(),
    ));
    // SD 2.x's tokenizer.json, cut to what is read (the whole is 77 KB).
    let sd2 = fixtures().join("sd2-tiny/tokenizer");
    let full: Value =
        serde_json::from_slice(&std::fs::read(sd2.join(TOKENIZER_JSON)).unwrap()).unwrap();
    let cut = json!({"model": full["model"], "added_tokens": full["added_tokens"]});
    seeds.push(pack(&[
        (TOKENIZER_JSON, cut.to_string().into_bytes()),
        (
            TOKENIZER_CONFIG_JSON,
            std::fs::read(sd2.join(TOKENIZER_CONFIG_JSON)).unwrap(),
        ),
    ]));
    seeds
}

/// Prompts that reach the special tokens, the unknown token, truncation
/// and the byte-level table.
const PROMPTS: [&str; 6] = [
    "a photo of an astronaut riding a horse",
    "",
    "<|startoftext|>the<|endoftext|> horse!! <|endoftext|>",
    "Ünïcödé ДОМ 😀 \u{0} \t\n the\u{301}",
    "b c b  c'll 12345678901234567890",
    "the horse the horse the horse the horse the horse the horse the horse the horse the \
     horse the horse the horse the horse the horse the horse the horse the horse the horse",
];

#[test]
fn tokenizer_folder_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    harness::fuzz("tokenizer", &tokenizer_seeds(), |bytes| {
        unpack_into(dir.path(), bytes);
        let Ok(tok) = ClipTokenizer::from_folder(dir.path()) else {
            return false;
        };
        let n = tok.model_max_length();
        for prompt in PROMPTS {
            let Ok(e) = tok.encode(prompt) else {
                continue;
            };
            assert_eq!((e.ids.len(), e.attention_mask.len()), (n, n));
            let _ = e.truncation_warning();
            let _ = tok.decode(&e.ids, true);
            let _ = tok.decode(&e.ids, false);
            let _ = tok.tokens(&e.ids);
        }
        if let Ok(encodings) = tok.encode_batch(&PROMPTS[..2]) {
            let _ = batch_tensors(&encodings, Device::Cpu);
        }
        let _ = tok.decode(&[-1, 0, 1, i64::from(u32::MAX), i64::MAX], false);
        let _ = tok.tokens(&[tok.bos_token_id(), tok.eos_token_id(), tok.pad_token_id()]);
        true
    });
}

/// The text encoder the weight and config inputs go with: 20 tokens of
/// width 8, one layer, 7 positions.
fn tiny_config() -> ClipTextConfig {
    serde_json::from_value(json!({
        "vocab_size": 20, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 7, "eos_token_id": 2,
        "hidden_act": "gelu", "architectures": ["CLIPTextModel"]
    }))
    .unwrap()
}

/// A text encoder folder (`config.json`, `model.safetensors`) with the tiny
/// model's weights.
fn tiny_model_folder() -> tempfile::TempDir {
    let dir = harness::scratch_dir();
    tch::manual_seed(0);
    ClipTextModel::new(&tiny_config(), Device::Cpu, DType::F32)
        .unwrap()
        .save(dir.path())
        .unwrap();
    dir
}

/// Valid configs whose models have at most this many weights are built, to
/// check that what `validate` accepts builds and that the count the loader
/// checks files against is the model's.
const BUILD_AT_MOST: u128 = 100_000;

#[test]
fn text_encoder_config_loader_survives_hostile_bytes() {
    let dir = tiny_model_folder();
    let path = dir.path().join("config.json");
    let mut seeds = vec![
        ClipTextConfig::sd15().to_json().into_bytes(),
        tiny_config().to_json().into_bytes(),
        br#"{"hidden_size": 8, "num_attention_heads": 4, "intermediate_size": 4, "vocab_size": 3,
            "num_hidden_layers": 2, "max_position_embeddings": 2, "layer_norm_eps": 1e-300,
            "hidden_act": "quick_gelu", "eos_token_id": 49407}"#
            .to_vec(),
    ];
    for case in ["sd1-tiny", "sd2-tiny"] {
        seeds.push(std::fs::read(fixtures().join(case).join("text_encoder/config.json")).unwrap());
    }
    harness::fuzz("text-encoder-config", &seeds, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(config) = ClipTextConfig::from_file(&path) else {
            return false;
        };
        let text = config.to_json();
        assert!(
            serde_json::from_str::<ClipTextConfig>(&text).is_ok(),
            "{text}"
        );
        let _ = (config.hidden_act(), config.eos_token_id());
        let Ok(dims) = config.validate(&path) else {
            return false;
        };
        let _ = dims.head_dim();
        let n = dims.num_parameters();
        if n <= BUILD_AT_MOST {
            let model = ClipTextModel::new(&config, Device::Cpu, DType::F32)
                .expect("a validated config builds");
            assert_eq!(n, model.num_parameters() as u128);
        }
        // Next to the tiny model's weights: refused before allocating when
        // the config is far bigger, else built and compared.
        std::fs::write(&path, &text).unwrap();
        if let Ok(model) = ClipTextModel::load(dir.path(), Device::Cpu, DType::F32) {
            assert_eq!(model.dims(), &dims);
        }
        true
    });
}

/// The tiny model's weights, as transformers 4 and 5 name them, with the
/// `position_ids` buffer of older checkpoints, in half precision.
fn weight_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let path = dir.join("model.safetensors");
    let weights = tensor::safetensors::load(&path, Device::Cpu).unwrap();
    let save = |tensors: Vec<(String, Tensor)>| {
        let out = dir.join("seed.safetensors");
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        tensor::safetensors::save(&out, &refs, None).unwrap();
        std::fs::read(out).unwrap()
    };
    let named = |f: &dyn Fn(&str, &Tensor) -> (String, Tensor)| {
        weights.iter().map(|(k, v)| f(k, v)).collect::<Vec<_>>()
    };
    let mut with_ids = named(&|k, v| (k.to_string(), v.shallow_clone()));
    with_ids.push((
        "text_model.embeddings.position_ids".into(),
        Tensor::arange(7, (Kind::Int64, Device::Cpu)).unsqueeze(0),
    ));
    vec![
        std::fs::read(&path).unwrap(),
        save(named(&|k, v| {
            (
                k.trim_start_matches("text_model.").to_string(),
                v.shallow_clone(),
            )
        })),
        save(named(&|k, v| (k.to_string(), v.to_kind(Kind::Half)))),
        save(with_ids),
    ]
}

#[test]
fn text_encoder_weights_loader_survives_hostile_bytes() {
    let dir = tiny_model_folder();
    let seeds = weight_seeds(dir.path());
    let weights = dir.path().join("model.safetensors");
    let ids = Tensor::from_slice(&[0i64, 5, 19, 2, 7, 7, 7]).unsqueeze(0);
    harness::fuzz("text-encoder-weights", &seeds, |bytes| {
        std::fs::write(&weights, bytes).unwrap();
        let Ok(model) = ClipTextModel::load(dir.path(), Device::Cpu, DType::F32) else {
            return false;
        };
        let out = tch::no_grad(|| model.prompt_embeds(&ids, None, None)).unwrap();
        assert_eq!(out.size(), [1, 7, 8]);
        true
    });
}
