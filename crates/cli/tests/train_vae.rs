//! `lmzh train-vae` end to end: a tiny run, its PSNR table and folder, and
//! errors that name the flag.

use std::process::Command;

fn lmzh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmzh"))
        .args(args)
        // One thread: these runs are tiny, and tests run side by side.
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("lmzh runs")
}

const TINY: [&str; 18] = [
    "--resolution",
    "16",
    "--block-out-channels",
    "8,8",
    "--norm-num-groups",
    "4",
    "--latent-channels",
    "2",
    "--max-train-images",
    "48",
    "--max-held-out",
    "10",
    "--steps",
    "3",
    "--batch-size",
    "8",
    "--device",
    "cpu",
];

#[test]
fn a_tiny_run_prints_the_psnr_table_and_writes_a_vae_folder() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().to_str().unwrap();
    let mut args = vec!["train-vae", "--runs-dir", runs, "--name", "tiny", "--quiet"];
    args.extend(TINY);
    let run = lmzh(&args);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for want in [
        "trained 3 steps",
        "held-out reconstruction PSNR: 10 images of digits",
        "VAE, 2x8x8 latent (128 values)",
        "bilinear, latent's size: 8x8 grey (64 values)",
        "bilinear, latent's values: 11x12 grey (132 values)",
        "scaling_factor",
        " dB",
    ] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    let root = dir.path().join("tiny");
    for f in [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "metrics.json",
        "metrics.jsonl",
        "reconstructions.png",
        "config.toml",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("vae/config.json")).unwrap())
            .unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(cfg["scaling_factor"], metrics["eval"]["scaling_factor"]);
    assert_eq!(cfg["latent_channels"], 2);
}

#[test]
fn bad_flags_are_named() {
    for (flags, want) in [
        (
            vec!["--kl-weight", "-1"],
            "--kl-weight: expected a finite number >= 0, got -1",
        ),
        (
            vec!["--block-out-channels", "16,30"],
            "--block-out-channels: 30: expected positive multiples of norm_num_groups = 8",
        ),
        (
            vec!["--reconstruction-loss", "l3"],
            "--reconstruction-loss: expected `l1` or `l2`",
        ),
        (
            vec!["--resolution", "30"],
            "--resolution: 30: expected a multiple of 4",
        ),
        (
            vec!["--data", "cifar10:/nowhere", "--perceptual-weight", "0.5"],
            "--perceptual-weight: no bundled classifier fits the data",
        ),
        (vec!["--data", "nonsense"], "--data: "),
    ] {
        let mut args = vec!["train-vae", "--print-config"];
        args.extend(flags.iter().copied());
        let run = lmzh(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{flags:?} succeeded");
        assert!(stderr.contains(want), "{flags:?}: {stderr}");
    }
}

#[test]
fn print_config_shows_the_flags_over_the_defaults() {
    let run = lmzh(&[
        "train-vae",
        "--print-config",
        "--latent-channels",
        "8",
        "--lr",
        "5e-4",
        "--no-mid-block-attention",
    ]);
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    for want in [
        "latent_channels = 8\n",
        "learning_rate = 0.0005\n",
        "mid_block_add_attention = false\n",
        "data = \"digits\"\n",
        "kl_weight = ",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let help = lmzh(&["train-vae", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("lmzh train-vae --name digits-vae"), "{help}");
}
