//! `lmzh tokenize` end to end: ids and tokens of a pipeline's tokenizer,
//! the truncation report, and the errors for folders that do not fit.

use std::path::PathBuf;
use std::process::Command;

use text::ClipTokenizer;

fn lmzh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmzh"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("lmzh runs")
}

/// A tiny Stable Diffusion 1.x-like pipeline (the `text` crate's fixture).
fn pipeline() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../text/tests/fixtures/sd1-tiny")
}

#[test]
fn json_output_gives_the_padded_ids_and_the_tokens() {
    let model = pipeline();
    let prompt = "A photo of an astronaut, 4K!";
    let run = lmzh(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        prompt,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let want = ClipTokenizer::from_folder(&model)
        .unwrap()
        .encode(prompt)
        .unwrap();
    let ids: Vec<i64> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(ids, want.ids);
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], 1512);
    assert_eq!(v["truncated"], false);
    assert_eq!(v["truncated_text"], serde_json::Value::Null);
    let tokens = v["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), want.len_unpadded());
    assert_eq!(tokens[1], "a</w>");
    assert_eq!(tokens.last().unwrap(), "<|endoftext|>");

    // the tokenizer folder itself works too, and the empty prompt is fine
    let tok_dir = model.join("tokenizer");
    let run = lmzh(&[
        "tokenize",
        "--model",
        tok_dir.to_str().unwrap(),
        "--prompt",
        "",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["ids"][0], 1512);
    assert_eq!(v["ids"][1], 1513);
    assert_eq!(v["tokens"].as_array().unwrap().len(), 2);
}

#[test]
fn long_prompts_report_what_was_cut() {
    let model = pipeline();
    let prompt = ["a red apple on a wooden table"; 20].join(", ");
    let run = lmzh(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        &prompt,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("ids (77, 77 before padding"), "{stdout}");
    assert!(stdout.contains("truncated: "), "{stdout}");
    assert!(
        stderr.contains("truncated because CLIP can only handle sequences up to 77 tokens"),
        "{stderr}"
    );
    let run = lmzh(&[
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        &prompt,
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert!(v["truncated_text"]
        .as_str()
        .unwrap()
        .ends_with("wooden table"));
}

#[test]
fn folders_without_a_tokenizer_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model_index.json"), "{}").unwrap();
    let run = lmzh(&[
        "tokenize",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("--model") && stderr.contains("without a tokenizer/ subfolder"),
        "{stderr}"
    );

    let tok = tmp.path().join("tokenizer");
    std::fs::create_dir(&tok).unwrap();
    std::fs::write(tok.join("tokenizer_config.json"), "{\"pad_token\": ").unwrap();
    let run = lmzh(&[
        "tokenize",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("tokenizer_config.json: not valid JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
