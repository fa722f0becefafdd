//! `lmzh eval prompts` reads pixel-space and latent-mode runs of
//! `captioned-digits` alike (the latent one decoded by its VAE), and names a
//! pipeline that does not draw 32x32 grey canvases.

use std::path::{Path, PathBuf};
use std::process::Command;

fn lmzh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmzh"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("lmzh runs")
}

fn ok(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// A one-step latent run on captioned-digits with a one-step VAE (tiny
/// sizes; the numbers mean nothing, the plumbing does).
fn latent_run(dir: &Path) -> PathBuf {
    let runs = dir.to_str().unwrap();
    ok(&lmzh(&[
        "train-vae",
        "--data",
        "captioned-digits",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--block-out-channels",
        "8,8",
        "--norm-num-groups",
        "4",
        "--latent-channels",
        "2",
        "--max-train-images",
        "16",
        "--max-held-out",
        "4",
        "--checkpoint-every",
        "0",
        "--device",
        "cpu",
        "--runs-dir",
        runs,
        "--name",
        "vae",
        "--quiet",
    ]));
    let vae = dir.join("vae/vae");
    ok(&lmzh(&[
        "train",
        "--preset",
        "captioned-digits",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--runs-dir",
        runs,
        "--name",
        "latent",
        "--quiet",
        "--set",
        &format!("model.text.vae={:?}", vae.display().to_string()),
        "--set",
        "model.text.block_out_channels=[8,8]",
        "--set",
        "model.text.down_block_types=[\"CrossAttnDownBlock2D\",\"DownBlock2D\"]",
        "--set",
        "model.text.up_block_types=[\"UpBlock2D\",\"CrossAttnUpBlock2D\"]",
        "--set",
        "model.text.norm_num_groups=4",
        "--set",
        "model.text.attention_head_dim=2",
        "--set",
        "model.text.hidden_size=16",
        "--set",
        "model.text.intermediate_size=32",
        "--set",
        "model.text.num_hidden_layers=1",
        "--set",
        "model.text.num_attention_heads=2",
        "--set",
        "log.sample_every=0",
        "--set",
        "log.checkpoint_every=0",
    ]));
    dir.join("latent")
}

#[test]
fn a_latent_run_is_scored_and_other_pipelines_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let run = latent_run(tmp.path());
    assert!(run.join("vae/config.json").is_file());
    let json = tmp.path().join("prompts.json");
    let text = ok(&lmzh(&[
        "eval",
        "prompts",
        "--model",
        run.to_str().unwrap(),
        "--images-per-prompt",
        "1",
        "--steps",
        "2",
        "--pairs",
        "held-out",
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]));
    assert!(text.contains("held out"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report.is_object(), "{report}");

    // The tiny Stable-Diffusion pipeline draws 3-channel 64x64 pictures.
    let sd = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sampler/tests/fixtures/sd_tiny/pipeline");
    let out = lmzh(&[
        "eval",
        "prompts",
        "--model",
        sd.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("3-channel 64x64") && err.contains("--model"),
        "{err}"
    );
}
