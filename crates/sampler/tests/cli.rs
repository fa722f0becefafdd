//! The `sampler` binary end to end: a tiny diffusers DDPMPipeline folder
//! (written by `scripts/gen_sampler_fixtures.py` with `save_pretrained`)
//! sampled with DDIM on fixed noise reproduces diffusers' DDIM loop, and bad
//! input gives one-line errors, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Runs the binary as a user would (no RUST_LOG), output captured.
fn sampler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sampler"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the sampler binary runs")
}

fn reference() -> tensor::safetensors::NamedTensors {
    let path = fixtures().join("tiny_pipeline_ddim10.safetensors");
    tensor::safetensors::load(&path, Device::Cpu).unwrap_or_else(|e| {
        panic!("{e}; regenerate with `cargo xtask py scripts/gen_sampler_fixtures.py`")
    })
}

fn write_noise(dir: &Path, t: &Tensor) -> String {
    let p = dir.join("n.safetensors");
    tensor::safetensors::save(&p, &[("x_T", t)], None).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn ddim_on_a_diffusers_pipeline_reproduces_diffusers() {
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let noise = write_noise(dir.path(), &reference["noise"]);
    let out = dir.path().join("out.safetensors");
    let images = dir.path().join("images");
    let gif = dir.path().join("t.gif");
    let model = fixtures().join("tiny_pipeline");
    let run = sampler(&[
        "--model",
        model.to_str().unwrap(),
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "--init-noise",
        &noise,
        "--save-tensors",
        out.to_str().unwrap(),
        "--out",
        images.to_str().unwrap(),
        "--device",
        "cpu",
        "--trajectory",
        gif.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "sampler failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Quiet by default: nothing on stderr, where the images went on stdout.
    assert_eq!(String::from_utf8_lossy(&run.stderr), "");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.starts_with("sampled "), "{stdout}");
    assert!(stdout.contains(images.to_str().unwrap()), "{stdout}");
    let ours = tensor::safetensors::load(&out, Device::Cpu).unwrap();
    let samples = &ours["samples"];
    assert_eq!(samples.kind(), Kind::Float);
    let expected = &reference["samples"];
    assert_eq!(samples.size(), expected.size());
    let err = (samples - expected).norm().double_value(&[]) / expected.norm().double_value(&[]);
    println!("tiny pipeline, DDIM 10 steps: relative L2 error {err:.3e}");
    assert!(err <= 1e-3, "relative L2 error {err:.3e}");
    for name in ["00000.png", "00001.png", "grid.png"] {
        assert!(images.join(name).is_file(), "{name} missing");
    }
    assert!(gif.is_file());
}

#[test]
fn verbose_flags_add_plain_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("tiny_pipeline");
    let out = dir.path().join("o");
    let run = sampler(&[
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "2",
        "--num-images",
        "1",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "-vv",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("DEBUG"), "-vv shows debug lines: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes in a pipe: {stderr:?}"
    );
}

/// Runs the binary expecting failure; returns its one-line message.
fn fails(args: &[&str]) -> String {
    let run = sampler(args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!run.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
    errors[0].to_string()
}

#[test]
fn bad_input_gives_one_line_errors() {
    let model = fixtures().join("tiny_pipeline");
    let model = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let out = out.to_str().unwrap();

    let e = fails(&["--model", model, "--sampler", "lms", "--out", out]);
    assert!(
        e.contains("unknown sampler \"lms\"")
            && e.contains("ddpm, ddim, dpm++2m, euler, euler-a, heun, pndm"),
        "{e}"
    );

    let e = fails(&["--model", model, "--steps", "5000", "--out", out]);
    assert!(e.contains("5000") && e.contains("1000"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails(&["--model", empty.to_str().unwrap(), "--out", out]);
    assert!(e.contains("config.json"), "{e}");

    let half = dir.path().join("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::copy(
        fixtures().join("tiny_pipeline/unet/config.json"),
        half.join("config.json"),
    )
    .unwrap();
    let e = fails(&["--model", half.to_str().unwrap(), "--out", out]);
    assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");

    let wrong = Tensor::zeros([2, 3, 16, 16], (Kind::Float, Device::Cpu));
    let noise = write_noise(dir.path(), &wrong);
    let e = fails(&[
        "--model",
        model,
        "--init-noise",
        &noise,
        "--device",
        "cpu",
        "--out",
        out,
    ]);
    assert!(
        e.contains("[2, 3, 16, 16]") && e.contains("[N, 1, 16, 16]"),
        "{e}"
    );

    let e = fails(&[
        "--model", model, "--labels", "3", "--device", "cpu", "--out", out,
    ]);
    assert!(e.contains("unconditional"), "{e}");

    let e = fails(&[
        "--model",
        model,
        "--sampler",
        "euler",
        "--eta",
        "1",
        "--out",
        out,
    ]);
    assert!(e.contains("ddim sampler only"), "{e}");
}
