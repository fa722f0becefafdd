//! Loading and saving the text encoder: folders, weight names, dtypes,
//! and the errors for what does not fit.

mod common;

use std::path::Path;

use common::{fixtures, max_rel};
use tch::{Device, Kind, Tensor};
use text::{ClipTextModel, DType};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn ids() -> Tensor {
    common::references("sd1-tiny")["input_ids"].shallow_clone()
}

fn load(dir: &Path) -> Result<ClipTextModel, text::Error> {
    ClipTextModel::load(dir, Device::Cpu, DType::F32)
}

#[test]
fn saved_models_load_back_with_transformers_4_names() {
    let model = load(&fixtures().join("sd2-tiny")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path()).unwrap();
    let weights =
        tensor::safetensors::load(tmp.path().join("model.safetensors"), Device::Cpu).unwrap();
    assert!(weights.contains_key("text_model.embeddings.token_embedding.weight"));
    assert!(weights.keys().all(|k| k.starts_with("text_model.")));
    let config = std::fs::read_to_string(tmp.path().join("config.json")).unwrap();
    let orig =
        std::fs::read_to_string(fixtures().join("sd2-tiny/text_encoder/config.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&config).unwrap(),
        serde_json::from_str::<serde_json::Value>(&orig).unwrap()
    );
    let back = load(tmp.path()).unwrap();
    let a = tch::no_grad(|| model.forward(&ids(), None)).unwrap();
    let b = tch::no_grad(|| back.forward(&ids(), None)).unwrap();
    assert!(a.last_hidden_state.equal(&b.last_hidden_state));
}

#[test]
fn weight_mismatches_are_listed_in_full() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("sd1-tiny/text_encoder"), tmp.path());
    let path = tmp.path().join("model.safetensors");
    let mut weights = tensor::safetensors::load(&path, Device::Cpu).unwrap();
    let _ = weights.remove("text_model.final_layer_norm.bias").unwrap();
    weights.insert(
        "text_projection.weight".into(),
        Tensor::zeros([4, 32], (Kind::Float, Device::Cpu)),
    );
    weights.insert(
        "text_model.encoder.layers.1.mlp.fc1.weight".into(),
        Tensor::zeros([3, 32], (Kind::Float, Device::Cpu)),
    );
    // the same tensor under its transformers-5 name too
    let dup = weights["text_model.embeddings.token_embedding.weight"].shallow_clone();
    weights.insert("embeddings.token_embedding.weight".into(), dup);
    let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tensor::safetensors::save(&path, &refs, None).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    for needle in [
        "model.safetensors",
        "missing from the file (1): text_model.final_layer_norm.bias",
        "unexpected in the file (2): text_model.embeddings.token_embedding.weight (the same \
         weight as embeddings.token_embedding.weight), text_projection.weight",
        "text_model.encoder.layers.1.mlp.fc1.weight (file [3, 32], model [64, 32])",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn bad_folders_and_configs_say_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load(&tmp.path().join("nope")).unwrap_err().to_string();
    assert!(err.contains("no such folder"), "{err}");
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("neither a text encoder folder"), "{err}");
    std::fs::write(tmp.path().join("model_index.json"), "{}").unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("without text_encoder/config.json"), "{err}");

    let te = tmp.path().join("text_encoder");
    copy_dir(&fixtures().join("sd1-tiny/text_encoder"), &te);
    let config = te.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("quick_gelu", "swiglu")).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("text_encoder/config.json")
            && err.contains("hidden_act")
            && err.contains("swiglu"),
        "{err}"
    );
    std::fs::write(
        &config,
        text.replace("\"hidden_size\": 32", "\"hidden_size\": \"32\""),
    )
    .unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("field `hidden_size`"),
        "{err}"
    );
    std::fs::write(&config, &text[..text.len() / 2]).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("config.json: not valid JSON"), "{err}");

    std::fs::write(&config, &text).unwrap();
    std::fs::remove_file(te.join("model.safetensors")).unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
    std::fs::write(te.join("pytorch_model.bin"), b"pickle").unwrap();
    let err = load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("pytorch_model.bin"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let model = load(&fixtures().join("sd1-tiny")).unwrap();
    let cases: Vec<(Tensor, &str)> = vec![
        (
            Tensor::from_slice(&[1i64, 2, 3]),
            "expected [batch, length]",
        ),
        (
            Tensor::from_slice(&[0i64, 1514]).view([1, 2]),
            "vocabulary has 1514",
        ),
        (
            Tensor::from_slice(&[-1i64, 3]).view([1, 2]),
            "vocabulary has 1514",
        ),
        (
            Tensor::zeros([1, 78], (Kind::Int64, Device::Cpu)),
            "78 positions",
        ),
        (
            Tensor::zeros([1, 4], (Kind::Float, Device::Cpu)),
            "expected integers",
        ),
    ];
    for (ids, needle) in cases {
        let err = model.forward(&ids, None).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    let ids = Tensor::zeros([2, 5], (Kind::Int64, Device::Cpu));
    let err = model
        .forward(
            &ids,
            Some(&Tensor::ones([2, 4], (Kind::Int64, Device::Cpu))),
        )
        .unwrap_err();
    assert!(err.to_string().contains("attention_mask"), "{err}");
    let err = model
        .prompt_embeds(&ids, None, Some(3))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clip_skip 3") && err.contains("at most 2"),
        "{err}"
    );
    // int32 ids and shorter sequences are fine
    let out = model.forward(&ids.to_kind(Kind::Int), None).unwrap();
    assert_eq!(out.last_hidden_state.size(), [2, 5, 32]);
}

/// Half precision gives the float32 numbers to its own precision.
#[test]
fn bf16_and_f16_weights_load_and_agree_with_f32() {
    let dir = fixtures().join("sd2-tiny");
    let f32 = load(&dir).unwrap();
    let want = tch::no_grad(|| f32.forward(&ids(), None))
        .unwrap()
        .last_hidden_state;
    for (dtype, tol) in [(DType::BF16, 5e-2), (DType::F16, 1e-2)] {
        let model = ClipTextModel::load(&dir, Device::Cpu, dtype).unwrap();
        let out = tch::no_grad(|| model.forward(&ids(), None)).unwrap();
        assert_eq!(out.last_hidden_state.kind(), dtype.kind());
        let err = max_rel(&out.last_hidden_state, &want);
        println!("{dtype}: max relative error {err:.2e}");
        assert!(err < tol, "{dtype}: {err:.2e}");
    }
}
