//! `lmzh txt2img` end to end on the tiny Stable-Diffusion-like pipeline of
//! `scripts/gen_sd_pipeline_fixtures.py`: from the fixture's latents
//! (`--init-noise`) the final latents equal diffusers'
//! `StableDiffusionPipeline` (PNDM, the folder's scheduler, guidance 7.5
//! with a negative prompt), the PNGs, grid and trajectory are written, and
//! bad input is a clear error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use tensor::tch::{Device, Kind, Tensor};

fn lmzh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmzh"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("lmzh runs")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sampler/tests/fixtures/sd_tiny")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

#[test]
fn prompts_become_the_pictures_diffusers_makes() {
    let tmp = tempfile::tempdir().unwrap();
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixtures().join("io.safetensors"), Device::Cpu).unwrap();
    let noise = tmp.path().join("noise.safetensors");
    tensor::safetensors::save(&noise, &[("latents", &io["latents"])], None).unwrap();
    let out = tmp.path().join("out");
    let tensors = tmp.path().join("result.safetensors");
    let traj = tmp.path().join("steps.png");
    let model = fixtures().join("pipeline");
    let run = lmzh(&[
        "txt2img",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle on a white field",
        "--prompt",
        "Two cats, 3 dogs!",
        "--negative-prompt",
        "blurry",
        "--steps",
        "10",
        "--device",
        "cpu",
        "--init-noise",
        noise.to_str().unwrap(),
        "--save-tensors",
        tensors.to_str().unwrap(),
        "--trajectory",
        traj.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("with pndm"), "{stdout}");
    let got = tensor::safetensors::load(&tensors, Device::Cpu).unwrap();
    let err = rel_l2(&got["latents"], &io["pndm_g7.5_latents"]);
    assert!(err <= 1e-3, "latents: relative L2 error {err:.2e}");
    let images = (&got["samples"] + 1.0) / 2.0;
    let err = rel_l2(&images, &io["pndm_g7.5_images"]);
    assert!(err <= 1e-3, "images: relative L2 error {err:.2e}");
    for f in ["image-000.png", "image-001.png", "grid.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let picture = tensor::image::load_image(&traj).unwrap();
    // Two images, two rows each (x_t, predicted x_0) of 64 px plus padding.
    assert!(picture.size()[1] > 4 * 64, "{:?}", picture.size());
}

#[test]
fn bad_input_is_a_clear_error() {
    let model = fixtures().join("pipeline");
    let model = model.to_str().unwrap();
    for (args, needle) in [
        (vec!["--height", "60"], "height 60"),
        (vec!["--sampler", "nope"], "nope"),
        (vec!["--guidance-rescale", "2"], "--guidance-rescale"),
    ] {
        let mut all = vec!["txt2img", "--model", model, "--prompt", "x", "--steps", "2"];
        all.extend(args);
        all.extend(["--device", "cpu", "--out", "/nonexistent/never"]);
        let run = lmzh(&all);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{all:?}");
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = lmzh(&[
        "txt2img",
        "--model",
        tmp.path().to_str().unwrap(),
        "--prompt",
        "x",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("model_index.json"), "{stderr}");
}
