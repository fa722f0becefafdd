//! Text to image against diffusers' `StableDiffusionPipeline` on the tiny
//! pipeline of `scripts/gen_sd_pipeline_fixtures.py`: from the same latents,
//! two prompts, 10 steps of PNDM, DDIM, Euler and DPM-Solver++, with and
//! without guidance (7.5, with a negative prompt), give the same final
//! latents (relative L2 error <= 1e-3) and images (<= 1e-3).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sampler::text_to_image::{Prompts, TextToImage};
use sampler::{by_name, sample, SolverOptions, TorchRng};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn prompts(guidance: f64) -> Prompts {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("prompts.json")).unwrap())
            .unwrap();
    Prompts {
        prompts: meta["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
        negative_prompt: (guidance > 1.0).then(|| meta["negative_prompt"].as_str().unwrap().into()),
        guidance_scale: guidance,
        guidance_rescale: 0.0,
        images_per_prompt: 1,
        clip_skip: None,
    }
}

#[test]
fn prompts_to_pictures_match_the_diffusers_pipeline() {
    let pipe = TextToImage::load(fixtures().join("pipeline"), Device::Cpu).unwrap();
    assert_eq!(pipe.scheduler_class.as_deref(), Some("PNDMScheduler"));
    assert_eq!(pipe.vae_scale_factor(), 8);
    assert_eq!(pipe.default_size(), (64, 64));
    let worst = run_every_solver(&pipe, "");
    assert!(worst <= TOLERANCE, "worst relative L2 error {worst:.2e}");
}

/// The SD-2.x-like pipeline: exact-erf GELU text encoder with pad token
/// "!", linear proj_in/out, per-block head counts, upcast_attention, and a
/// v-prediction DDIM config.
#[test]
fn sd2_like_pipelines_match_too() {
    let pipe = TextToImage::load(fixtures().join("sd2_pipeline"), Device::Cpu).unwrap();
    assert_eq!(pipe.scheduler_class.as_deref(), Some("DDIMScheduler"));
    assert_eq!(
        pipe.scheduler.prediction_type,
        Some(schedule::PredictionType::VPrediction)
    );
    let worst = run_every_solver(&pipe, "sd2_");
    assert!(worst <= TOLERANCE, "worst relative L2 error {worst:.2e}");
}

/// The worst relative L2 error of latents and images over PNDM, DDIM,
/// Euler and DPM-Solver++ with and without guidance, against the keys
/// `{prefix}{solver}_g{guidance}_*` of io.safetensors.
fn run_every_solver(pipe: &TextToImage, prefix: &str) -> f64 {
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixtures().join("io.safetensors"), Device::Cpu).unwrap();
    let mut worst: f64 = 0.0;
    for guidance in [1.0, 7.5] {
        let encoded = pipe.encode(&prompts(guidance)).unwrap();
        assert_eq!(encoded.batch, 2);
        assert!(encoded.warnings.is_empty());
        for name in ["pndm", "ddim", "euler", "dpm++2m"] {
            let mut solver = by_name(name, &pipe.scheduler, 10, &SolverOptions::default()).unwrap();
            let latents = sample(
                &pipe.unet,
                solver.as_mut(),
                &io["latents"],
                &encoded.conditioning,
                &mut TorchRng,
                &mut |_| {},
            )
            .unwrap();
            let images = pipe.decode(&latents).unwrap();
            let key = format!("{prefix}{name}_g{guidance:.1}");
            let e_lat = rel_l2(&latents, &io[&format!("{key}_latents")]);
            let e_img = rel_l2(&images, &io[&format!("{key}_images")]);
            println!("{key}: latents {e_lat:.2e}, images {e_img:.2e}");
            worst = worst.max(e_lat).max(e_img);
        }
    }
    worst
}

#[test]
fn sizes_prompts_and_folders_are_checked() {
    let pipe = TextToImage::load(fixtures().join("pipeline"), Device::Cpu).unwrap();
    assert_eq!(pipe.latent_shape(2, 64, 48).unwrap(), [2, 4, 8, 6]);
    let err = pipe.latent_shape(1, 60, 64).unwrap_err().to_string();
    assert!(err.contains("height 60") && err.contains('8'), "{err}");
    // An empty prompt is allowed (it is the unconditional prompt); a long one
    // is cut with a warning naming what was dropped.
    let long = "a very long prompt about many things ".repeat(20);
    let p = Prompts {
        prompts: vec![String::new(), long],
        images_per_prompt: 3,
        ..prompts(1.0)
    };
    let encoded = pipe.encode(&p).unwrap();
    assert_eq!(encoded.batch, 6);
    assert_eq!(encoded.warnings.len(), 1, "{:?}", encoded.warnings);
    assert!(
        encoded.warnings[0].contains("truncated"),
        "{:?}",
        encoded.warnings
    );
    let states = encoded.conditioning.cond.encoder_hidden_states.unwrap();
    assert_eq!(states.size()[0], 6);
    assert!(states.get(0).equal(&states.get(2)) && !states.get(0).equal(&states.get(3)));

    let tmp = tempfile::tempdir().unwrap();
    let err = TextToImage::load(tmp.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_index.json"), "{err}");
    std::fs::write(
        tmp.path().join("model_index.json"),
        r#"{"_class_name": "StableDiffusionXLPipeline"}"#,
    )
    .unwrap();
    let err = TextToImage::load(tmp.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("StableDiffusionXLPipeline"), "{err}");
    std::fs::write(
        tmp.path().join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline"}"#,
    )
    .unwrap();
    let err = TextToImage::load(tmp.path(), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unet/"), "{err}");
}

/// A saved pipeline is a diffusers folder that loads back with the same
/// components: the same latents from the same noise, bit for bit.
#[test]
fn saved_pipelines_load_back_unchanged() {
    let pipe = TextToImage::load(fixtures().join("sd2_pipeline"), Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("saved");
    pipe.save(&dir).unwrap();
    let e = pipe.save(&dir).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model_index.json")).unwrap())
            .unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionPipeline");
    assert_eq!(index["scheduler"][1], "DDIMScheduler");
    let back = TextToImage::load(&dir, Device::Cpu).unwrap();
    assert_eq!(back.tokenizer.pad_token(), "!");
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixtures().join("io.safetensors"), Device::Cpu).unwrap();
    let run = |p: &TextToImage| {
        let encoded = p.encode(&prompts(7.5)).unwrap();
        let mut solver = by_name("ddim", &p.scheduler, 3, &SolverOptions::default()).unwrap();
        sample(
            &p.unet,
            solver.as_mut(),
            &io["latents"],
            &encoded.conditioning,
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap()
    };
    assert!(run(&pipe).equal(&run(&back)));
    // No temporary folder is left beside it.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("saved")]);
}
