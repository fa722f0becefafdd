//! `trainer::vae_train`: a tiny run leaves a `vae/` folder that `vae::Vae`
//! loads with the trained weights, the loss falls on a fixed batch, and bad
//! settings are errors that name them.

use std::path::Path;

use tch::{Device, Kind, Tensor};
use trainer::vae_train::{train_vae, VaeTrainConfig, VaeTrainOptions, VaeTrainer, PSNR_CAP_DB};

/// A tiny VAE (two levels of 8 channels, 2 x 8 x 8 latents of 16 x 16
/// images) on a few hundred bundled digits.
fn tiny(runs: &Path, name: &str) -> VaeTrainConfig {
    VaeTrainConfig {
        name: name.into(),
        runs_dir: runs.to_path_buf(),
        device: tensor::DeviceSpec::Cpu,
        resolution: 16,
        block_out_channels: vec![8, 8],
        norm_num_groups: 4,
        latent_channels: 2,
        max_train_images: Some(64),
        max_held_out: 12,
        steps: 4,
        batch_size: 8,
        warmup_steps: 1,
        log_every: 2,
        checkpoint_every: 2,
        ..VaeTrainConfig::default()
    }
}

/// Held by every test: they draw from libtorch's global generator (weights,
/// noise), and a draw on another thread in between changes the sequence.
fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn quiet() -> VaeTrainOptions {
    VaeTrainOptions {
        progress: false,
        interrupt: None,
    }
}

/// Smooth blobs in [-1, 1], the same on every call.
fn blobs(n: i64, side: i64) -> Tensor {
    let r = Tensor::arange(side, (Kind::Float, Device::Cpu)) / side as f64;
    let (yy, xx) = (r.view([1, 1, side, 1]), r.view([1, 1, 1, side]));
    let k = Tensor::arange(n, (Kind::Float, Device::Cpu)).view([n, 1, 1, 1]);
    let cx = (&k * 0.37).sin() * 0.3 + 0.5;
    let cy = (&k * 0.61).cos() * 0.3 + 0.5;
    let d = (xx - cx).square() + (yy - cy).square();
    (d * -20.0).exp() * 2.0 - 1.0
}

#[test]
fn a_tiny_run_writes_a_vae_folder_that_loads_with_the_same_weights() {
    let _lock = torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny(dir.path(), "tiny");
    let mut t = VaeTrainer::new(config, &quiet()).unwrap();
    assert_eq!(t.train_images(), 64);
    assert_eq!(t.held_out().size(), [12, 1, 16, 16]);
    let s = t.run(&mut ()).unwrap();
    assert_eq!((s.steps, s.interrupted), (4, false));
    let root = dir.path().join("tiny");
    assert_eq!(s.run_dir, root);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "metrics.json",
        "reconstructions.png",
        "samples/step-000002.png",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    // No temporary folders of the atomic replacement are left.
    let names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");

    let loaded = vae::Vae::load(root.join("vae"), Device::Cpu).unwrap();
    let (ours, theirs) = (t.vae.state_dict(), loaded.state_dict());
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (k, v) in &ours {
        assert!(v.equal(&theirs[k]), "{k} differs");
    }
    let cfg = loaded.config();
    assert_eq!((cfg.in_channels, cfg.latent_channels), (1, 2));
    assert_eq!(cfg.block_out_channels, [8, 8]);
    assert!((cfg.scaling_factor - s.eval.scaling_factor).abs() < 1e-12);
    assert!((cfg.scaling_factor - 1.0 / s.eval.latent_std).abs() < 1e-9);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("vae/config.json")).unwrap())
            .unwrap();
    assert_eq!(json["_class_name"], "AutoencoderKL");

    // The evaluation: shapes, both baselines, PSNRs in range.
    let e = &s.eval;
    assert_eq!(
        (e.images, e.image_shape, e.latent_shape),
        (12, [1, 16, 16], [2, 8, 8])
    );
    assert_eq!(e.bilinear_latent_size.size, [8, 8]);
    assert_eq!(e.bilinear_equal_values.size, [11, 12]);
    for p in [
        e.psnr,
        e.bilinear_latent_size.psnr,
        e.bilinear_equal_values.psnr,
    ] {
        assert!(p > 0.0 && p < PSNR_CAP_DB, "{p}");
    }
    assert!(e.bilinear_equal_values.psnr > e.bilinear_latent_size.psnr);
    let table = e.table();
    assert!(
        table.contains("bilinear, latent's size: 8x8")
            && table.contains("bilinear, latent's values: 11x12")
            && table.contains("VAE, 2x8x8 latent (128 values)"),
        "{table}"
    );
    // metrics: two loss lines, an evaluation at the checkpoint and at the end.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(root.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().filter(|l| l.get("loss").is_some()).count(), 2);
    assert_eq!(lines.iter().filter(|l| l.get("eval").is_some()).count(), 2);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 4);
    assert_eq!(
        summary["eval"]["latent_shape"],
        serde_json::json!([2, 8, 8])
    );
    // The strip: 4 rows of 10 images of 16 pixels, 2 pixels apart.
    assert_eq!(
        image::image_dimensions(root.join("reconstructions.png")).unwrap(),
        (10 * 18 + 2, 4 * 18 + 2)
    );
}

#[test]
fn the_loss_falls_on_a_fixed_batch() {
    let _lock = torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = VaeTrainConfig {
        learning_rate: 3e-3,
        steps: 40,
        ..tiny(dir.path(), "fixed")
    };
    let x = blobs(8, 16);
    let mut t =
        VaeTrainer::with_data(config, x.copy(), x.copy(), "blobs".into(), &quiet()).unwrap();
    let first = t.evaluate().unwrap().psnr;
    let losses: Vec<f64> = (0..40).map(|_| t.step(&x).unwrap().loss).collect();
    let head: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let tail: f64 = losses[35..].iter().sum::<f64>() / 5.0;
    assert!(tail < 0.5 * head, "loss {head} -> {tail}: {losses:?}");
    let last = t.evaluate().unwrap().psnr;
    assert!(last > first + 3.0, "PSNR {first} -> {last}");
}

#[test]
fn runs_are_reproducible_from_the_seed() {
    let _lock = torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let x = blobs(8, 16);
    let digest = |name: &str| {
        let c = VaeTrainConfig {
            steps: 3,
            ..tiny(dir.path(), name)
        };
        let mut t = VaeTrainer::with_data(c, x.copy(), x.copy(), "blobs".into(), &quiet()).unwrap();
        for _ in 0..3 {
            let b = t.next_batch();
            t.step(&b).unwrap();
        }
        trainer::distributed::digest(&t.vae.state_dict().into_iter().collect::<Vec<_>>())
    };
    assert_eq!(digest("a"), digest("b"));
}

#[test]
fn bad_settings_are_errors_naming_them() {
    let _lock = torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let run = |edit: fn(&mut VaeTrainConfig)| {
        let mut c = tiny(dir.path(), "bad");
        edit(&mut c);
        train_vae(c, &quiet()).unwrap_err().to_string()
    };
    type Edit = fn(&mut VaeTrainConfig);
    let cases: [(Edit, &str); 6] = [
        (
            |c| c.latent_channels = 0,
            "invalid setting latent_channels: expected at least 1",
        ),
        (
            |c| c.resolution = 17,
            "invalid setting resolution: 17: expected a multiple of 2",
        ),
        (
            |c| c.batch_size = 100,
            "invalid setting batch_size: 100 is more than the 64 training images",
        ),
        (
            |c| c.data = "folder:/no/such/folder".into(),
            "invalid setting data:",
        ),
        (
            |c| c.held_out = "idx:/no/such/file".into(),
            "invalid setting held_out:",
        ),
        (
            |c| {
                c.data = "idx:/no/such/file".into();
                c.perceptual_weight = 1.0;
            },
            "invalid setting perceptual_weight: no bundled classifier fits",
        ),
    ];
    for (edit, want) in cases {
        let err = run(edit);
        assert!(err.starts_with(want), "{want}: {err}");
    }
    assert!(
        !dir.path().join("bad").exists(),
        "nothing is written for a bad config"
    );
}

#[test]
fn perceptual_and_adversarial_terms_train() {
    let _lock = torch_rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let config = VaeTrainConfig {
        resolution: 28,
        block_out_channels: vec![8, 8, 8],
        perceptual_weight: 0.5,
        adversarial_weight: 0.5,
        disc_start: 1,
        disc_layers: 2,
        disc_channels: 8,
        steps: 3,
        checkpoint_every: 0,
        ..tiny(dir.path(), "gan")
    };
    let mut t = VaeTrainer::new(config, &quiet()).unwrap();
    let b = t.next_batch();
    let first = t.step(&b).unwrap();
    assert!(first.perceptual > 0.0 && first.g_loss == 0.0 && first.d_loss == 0.0);
    let b = t.next_batch();
    let second = t.step(&b).unwrap();
    assert!(second.d_loss > 0.0 && second.d_weight > 0.0, "{second:?}");
    assert!(second.loss.is_finite() && second.g_loss.is_finite());
    let s = t.run(&mut ()).unwrap();
    assert_eq!(s.eval.latent_shape, [2, 7, 7]);
    assert_eq!(s.eval.bilinear_equal_values.size, [10, 10]);
}

/// Copies the `vae/` folder of a run into `dest/name` with `io.safetensors`:
/// held-out-like inputs and our outputs (posterior mean and log-variance,
/// decoded latents), the layout `scripts/gen_vae_fixtures.py --check-ours`
/// reads back through diffusers' `AutoencoderKL.from_pretrained`.
fn export_for_diffusers(vae_dir: &Path, dest: &Path, name: &str) {
    let out = dest.join(name);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(vae_dir.join(f), out.join(f)).unwrap();
    }
    let vae = vae::Vae::load(&out, Device::Cpu).unwrap();
    let cfg = vae.config();
    let side = cfg.sample_size.hw().0;
    let images = blobs(4, side).repeat([1, cfg.in_channels, 1, 1]);
    let posterior = vae.encode(&images).unwrap();
    let latents = posterior.mode() + posterior.mode().randn_like() * 0.1;
    let decoded = vae.decode(&latents).unwrap();
    tensor::safetensors::save(
        out.join("io.safetensors"),
        &[
            ("images", &images),
            ("mean", &posterior.mean),
            ("logvar", &posterior.logvar),
            ("latents", &latents),
            ("decoded", &decoded),
        ],
        None,
    )
    .unwrap();
}

/// Writes a trained folder for diffusers to check; with
/// `LMZH_VAE_CHECK_DIR=DIR` it stays there (and with `LMZH_VAE_CHECK_FROM=RUN`
/// the `vae/` of that run is exported beside it), then
/// `cargo xtask py scripts/gen_vae_fixtures.py --check-ours DIR` loads each
/// folder with `AutoencoderKL.from_pretrained` and compares (relative L2 <= 1e-4).
#[test]
fn a_trained_folder_exports_for_the_diffusers_check() {
    let _lock = torch_rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    let dest = std::env::var_os("LMZH_VAE_CHECK_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("check"));
    let config = VaeTrainConfig {
        checkpoint_every: 0,
        steps: 2,
        ..tiny(tmp.path(), "export")
    };
    let s = train_vae(config, &quiet()).unwrap();
    export_for_diffusers(&s.run_dir.join("vae"), &dest, "tiny-trained");
    if let Some(run) = std::env::var_os("LMZH_VAE_CHECK_FROM") {
        export_for_diffusers(&Path::new(&run).join("vae"), &dest, "from-run");
    }
    let io =
        tensor::safetensors::load(dest.join("tiny-trained/io.safetensors"), Device::Cpu).unwrap();
    assert_eq!(io["decoded"].size(), [4, 1, 16, 16]);
}
