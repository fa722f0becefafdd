//! End-to-end tests of the training loop on a tiny model and 8x8 digits.

mod common;

use std::path::{Path, PathBuf};

use tch::Device;
use trainer::checkpoint;
use trainer::progress::Lines;
use trainer::{train, TrainConfig, TrainOptions, Trainer};

/// A run that takes a second or two (batch 8).
fn tiny(dir: &Path, name: &str, steps: u64) -> TrainConfig {
    common::tiny(dir, name, steps, 8)
}

/// A tiny run with an evaluation at step 3 and at the end.
fn with_eval(dir: &Path, name: &str, steps: u64) -> TrainConfig {
    let mut c = tiny(dir, name, steps);
    c.eval.every = 3;
    c.eval.num_images = 12;
    c.eval.steps = 2;
    c.eval.reference_limit = 200;
    c
}

fn opts() -> TrainOptions {
    TrainOptions::default()
}

fn final_state(run: &Path) -> Vec<(String, Vec<u8>)> {
    let (_, last) = checkpoint::list(&run.join("checkpoints"))
        .pop()
        .expect("a checkpoint");
    let ck = checkpoint::load(&last, Device::Cpu).unwrap();
    let bytes = |t: &tch::Tensor| {
        let t = t.contiguous();
        let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut v, t.numel());
        v
    };
    let mut out = Vec::new();
    for (prefix, map) in [("model", &ck.model), ("ema", &ck.ema), ("optim", &ck.optim)] {
        for (k, t) in map {
            out.push((format!("{prefix}.{k}"), bytes(t)));
        }
    }
    out
}

#[test]
fn loss_decreases_on_a_small_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny(dir.path(), "learn", 120);
    c.optim.learning_rate = 5e-3;
    let s = train(c, &opts()).unwrap();
    let losses = trainer::run_dir::read_losses(&s.run_dir.join("metrics.jsonl"));
    assert_eq!(losses.len(), 120);
    let mean = |xs: &[(u64, f64)]| xs.iter().map(|p| p.1).sum::<f64>() / xs.len() as f64;
    let (first, last) = (mean(&losses[..20]), mean(&losses[100..]));
    assert!(last < 0.8 * first, "loss went from {first:.3} to {last:.3}");
    // what the run leaves behind
    for f in [
        "config.toml",
        "run.json",
        "metrics.jsonl",
        "loss.png",
        "model_index.json",
    ] {
        assert!(s.run_dir.join(f).is_file(), "{f}");
    }
    assert!(s.run_dir.join("samples/step-000120.png").is_file());
    // the diffusers export loads as a U-Net
    let unet = unet::UNet::load(&s.run_dir, Device::Cpu).unwrap();
    assert_eq!(unet.config().num_class_embeds, Some(11));
    // and the sampler samples from the run folder, with class names and guidance
    let out = dir.path().join("sampled");
    let args = <SampleCli as clap::Parser>::try_parse_from([
        "sampler",
        "--model",
        s.run_dir.to_str().unwrap(),
        "--sampler",
        "dpm++2m",
        "--steps",
        "4",
        "--num-images",
        "3",
        "--labels",
        "7,3,0",
        "--guidance-scale",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let summary = sampler::cli::run(&args.args).unwrap();
    assert_eq!(summary.images, 3);
    assert!(out.join("grid.png").is_file());
    let img = image::open(out.join("00000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (8, 8));
}

#[derive(clap::Parser)]
struct SampleCli {
    #[command(flatten)]
    args: sampler::cli::Args,
}

#[test]
fn resume_is_bit_identical_to_a_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let straight = train(tiny(dir.path(), "straight", 8), &opts()).unwrap();
    let first = train(
        tiny(dir.path(), "split", 8),
        &TrainOptions {
            stop_after: Some(4),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(first.steps, 4);
    let ck: PathBuf = checkpoint::list(&first.run_dir.join("checkpoints"))
        .pop()
        .unwrap()
        .1;
    let resumed = train(
        tiny(dir.path(), "ignored", 8),
        &TrainOptions {
            resume: Some(ck),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, 8);
    assert_eq!(resumed.run_dir, first.run_dir);
    let (a, b) = (
        final_state(&straight.run_dir),
        final_state(&resumed.run_dir),
    );
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs after resume");
    }
    // metrics of the resumed run: one line per step, no duplicates
    let steps: Vec<u64> = trainer::run_dir::read_losses(&resumed.run_dir.join("metrics.jsonl"))
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
}

#[test]
fn evaluation_logs_metrics_and_keeps_the_best_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(with_eval(dir.path(), "eval", 6), &opts())
        .unwrap()
        .run_dir;
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval").is_some())
        .collect();
    // At step 3 and at the end.
    let steps: Vec<u64> = evals.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [3, 6]);
    for v in &evals {
        let e = &v["eval"];
        assert_eq!(e["feature_net"], "DIGITS");
        assert!(e["fd"].as_f64().unwrap() > 0.0, "{v}");
        for key in ["kid", "precision", "recall", "density", "coverage"] {
            assert!(e[key].as_f64().is_some(), "{key} missing in {v}");
        }
    }
    // The best checkpoint is the evaluation with the lowest FD, and loads.
    let best_step = evals
        .iter()
        .min_by(|a, b| {
            a["eval"]["fd"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["eval"]["fd"].as_f64().unwrap())
        })
        .unwrap()["step"]
        .as_u64()
        .unwrap();
    let best = checkpoint::load(&run.join("checkpoints/best.safetensors"), Device::Cpu).unwrap();
    assert_eq!(best.step, best_step);
}

#[test]
fn progress_lines_for_logs_are_plain_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(with_eval(dir.path(), "lines", 6), &opts()).unwrap();
    let mut lines = Lines::new(Vec::new(), std::time::Duration::from_secs(3600));
    t.run(&mut lines).unwrap();
    let text = String::from_utf8(lines.into_inner()).unwrap();
    assert!(!text.contains('\x1b'), "escape codes in {text:?}");
    let lines: Vec<&str> = text.lines().collect();
    // A tenth of 6 steps is less than one: a line after every step.
    assert_eq!(lines.len(), 6, "{text}");
    for (i, line) in lines.iter().enumerate() {
        let step = i + 1;
        assert!(line.starts_with(&format!("step {step}/6 (")), "{line}");
        for field in ["  loss 0.", " img/s  ", "  elapsed "] {
            assert!(line.contains(field), "{field:?} missing: {line}");
        }
        assert!(
            line.contains(if step < 6 { "  ETA " } else { "  done" }),
            "{line}"
        );
        // The FD of the evaluation at step 3, from then on.
        assert_eq!(line.contains("FD-DIGITS "), step >= 3, "{line}");
    }
    assert!(lines[5].ends_with("(step 3)"), "{}", lines[5]);
}

#[test]
fn the_binary_logs_plainly_when_stderr_is_not_a_terminal() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, with_eval(dir.path(), "piped", 6).to_toml()).unwrap();
    // Output captured through pipes, as under CI, nohup or `| tee`.
    let run = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--config", config.to_str().unwrap(), "-v"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stderr}");
    assert!(!stderr.contains('\x1b'), "escape codes in {stderr:?}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(progress.len(), 6, "{stderr}");
    assert!(
        progress[5].starts_with("step 6/6 (100%)  loss 0."),
        "{stderr}"
    );
    assert!(progress[5].contains(" img/s  elapsed ") && progress[5].contains("  done"));
    assert!(progress[5].contains("  FD-DIGITS "), "{stderr}");
    // -v: the info lines of the library, plain.
    assert!(
        stderr.contains(" INFO ") && stderr.contains("checkpoint written"),
        "{stderr}"
    );
    assert!(stdout.contains("trained 6 steps"), "{stdout}");

    // Without -v: warnings only, so no info lines.
    let resumed = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--resume", dir.path().join("piped").to_str().unwrap()])
        .args(["--steps", "7"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("step 7/7 ")),
        "{stderr}"
    );

    // A missing checkpoint: the path, in plain words.
    let missing = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(["--resume", "missing.safetensors"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert_eq!(stderr.trim(), "error: no such file: missing.safetensors");
}

#[test]
fn a_nan_step_is_skipped_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let s = train(
        tiny(dir.path(), "nan", 6),
        &TrainOptions {
            inject_nan_at: Some(3),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!((s.steps, s.skipped_steps), (6, 1));
    let text = std::fs::read_to_string(s.run_dir.join("metrics.jsonl")).unwrap();
    let skipped: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["skipped"] == true)
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["step"], 3, "metrics count steps from 1");
    assert_eq!(skipped[0]["timesteps"].as_array().unwrap().len(), 8);
    let ck = checkpoint::load(
        &checkpoint::list(&s.run_dir.join("checkpoints"))
            .pop()
            .unwrap()
            .1,
        Device::Cpu,
    )
    .unwrap();
    assert!(ck
        .model
        .values()
        .all(|t| t.isfinite().all().int64_value(&[]) == 1));
    assert_eq!(ck.optim_step, 5, "the skipped step takes no optimiser step");
}

#[test]
fn consecutive_failures_stop_the_run_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny(dir.path(), "diverge", 6);
    c.log.max_bad_steps = 1;
    let err = train(
        c,
        &TrainOptions {
            inject_nan_at: Some(2),
            ..opts()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("non-finite") && err.contains("step 2"),
        "{err}"
    );
}

#[test]
fn sigkill_during_saves_leaves_loadable_checkpoints() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "--runs-dir",
            dir.path().to_str().unwrap(),
            "--name",
            "killed",
            "--steps",
            "100000",
            "--quiet",
        ])
        .args([
            "--device",
            "cpu",
            "--batch-size",
            "8",
            "--set",
            "model.preset=\"tiny\"",
        ])
        .args([
            "--set",
            "model.block_out_channels=[8,16]",
            "--set",
            "model.layers_per_block=1",
        ])
        .args([
            "--set",
            "model.down_block_types=[\"DownBlock2D\",\"AttnDownBlock2D\"]",
        ])
        .args([
            "--set",
            "model.up_block_types=[\"AttnUpBlock2D\",\"UpBlock2D\"]",
        ])
        .args([
            "--set",
            "model.attention_head_dim=8",
            "--set",
            "model.norm_num_groups=4",
        ])
        .args([
            "--set",
            "data.preprocess.resolution=8",
            "--set",
            "log.checkpoint_every=1",
        ])
        .args([
            "--set",
            "log.sample_every=0",
            "--set",
            "log.keep_checkpoints=3",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while checkpoint::list(&run.join("checkpoints")).len() < 2 {
        assert!(Instant::now() < deadline, "no checkpoints appeared");
        assert!(child.try_wait().unwrap().is_none(), "trainer exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // saves happen every step: a kill now lands in or near one
    std::thread::sleep(Duration::from_millis(37));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let all = checkpoint::list(&run.join("checkpoints"));
    assert!(!all.is_empty());
    for (step, path) in &all {
        let ck = checkpoint::load(path, Device::Cpu).unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(ck.step, *step);
    }
    // Temporary files of writes cut short: the killed trainer's (its process
    // is gone) are removed on resume; a live process's are kept.
    let ckdir = run.join("checkpoints");
    let dead = ckdir.join(format!(".step-999998.safetensors.tmp-{}-0", child.id()));
    let live = ckdir.join(format!(
        ".step-999999.safetensors.tmp-{}-0",
        std::process::id()
    ));
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::write(&live, b"partial").unwrap();
    // and the run resumes from the newest one
    let latest = all.last().unwrap().1.clone();
    let s = train(
        TrainConfig::default(),
        &TrainOptions {
            resume: Some(latest),
            stop_after: Some(all.last().unwrap().0 + 1),
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(s.steps, all.last().unwrap().0 + 1);
    let temps: Vec<String> = std::fs::read_dir(&ckdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        !dead.exists(),
        "the killed writer's temporary file is removed"
    );
    let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        temps,
        [live_name],
        "only the live writer's temporary file is left"
    );
}
