//! Fine-tuning a Stable-Diffusion-style pipeline (`--init-from`): one step
//! against diffusers' `train_text_to_image.py` (loss and every U-Net
//! gradient, on the fixtures of `scripts/gen_finetune_fixtures.py`), and a
//! short run: frozen VAE and text encoder bit-identical, the forward process
//! read from the pipeline's scheduler, the run folder a pipeline again.

mod common;

use std::path::{Path, PathBuf};

use schedule::{Schedule, SchedulerConfig};
use tch::{Device, Kind, Tensor};
use trainer::config::NoiseConfig;
use trainer::model::TextModel;
use trainer::objective::{text_objective, Batch};
use trainer::{train, TrainOptions};

fn sd_tiny(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sampler/tests/fixtures/sd_tiny")
        .join(sub)
}

fn fixture(case: &str) -> std::collections::BTreeMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/finetune")
        .join(format!("{case}.safetensors"));
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo xtask py scripts/gen_finetune_fixtures.py`",
                path.display()
            )
        })
        .into_iter()
        .collect()
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    let d = (&a - &b).norm().double_value(&[]);
    let n = b.norm().double_value(&[]);
    if n == 0.0 {
        d
    } else {
        d / n
    }
}

/// The step of `train_text_to_image.py` with our pieces: the pipeline's
/// models as `--init-from` loads them, the posterior draw from the
/// fixture's noise, the trainer's objective.
fn one_step(case: &str, pipeline: &str) {
    let io = fixture(case);
    let dir = sd_tiny(pipeline);
    let m = TextModel::from_pipeline(&dir, Device::Cpu, false).unwrap();
    let captions: Vec<String> = vec![
        "a red circle on a white field".into(),
        "Two cats, 3 dogs!".into(),
    ];
    let states = m.encode(&captions, true).unwrap();
    assert!(
        !states.requires_grad(),
        "the frozen text encoder has no gradients"
    );
    let vae = m.vae.as_ref().expect("the pipeline has a VAE");
    let posterior = vae.encode(&io["pixel_values"]).unwrap();
    let latents = vae
        .scale_latents(&posterior.sample_with(&io["latent_noise"]).unwrap())
        .unwrap();
    let scheduler = SchedulerConfig::load(dir.join("scheduler/scheduler_config.json")).unwrap();
    let noise = NoiseConfig::default().with_scheduler(&scheduler).unwrap();
    let schedule = Schedule::from_config(&noise.scheduler_config()).unwrap();
    let batch = Batch {
        x0: &latents,
        noise: &io["noise"],
        t: &io["timesteps"],
        labels: None,
    };
    let loss = text_objective(
        &m.unet,
        &states,
        &schedule,
        &noise,
        tensor::Precision::Fp32,
        &batch,
    )
    .unwrap();
    loss.backward();
    let loss_err = rel(&loss.reshape([1]), &io["loss"]);
    println!(
        "{case}: loss {} (rel err {loss_err:.2e})",
        loss.double_value(&[])
    );
    assert!(loss_err <= 1e-5, "{case}: loss rel err {loss_err:.2e}");
    let mut worst = (0.0, String::new());
    let vars = m.unet.vs.variables();
    assert_eq!(
        vars.len(),
        io.keys().filter(|k| k.starts_with("grad.")).count(),
        "{case}: one gradient per U-Net parameter"
    );
    for (name, p) in vars {
        let want = &io[&format!("grad.{name}")];
        let err = rel(&p.grad(), want);
        if err > worst.0 {
            worst = (err, name);
        }
    }
    println!(
        "{case}: worst gradient rel err {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= 1e-4,
        "{case}: {} rel err {:.2e}",
        worst.1,
        worst.0
    );
}

#[test]
fn one_step_matches_train_text_to_image_epsilon() {
    one_step("sd1", "pipeline");
}

#[test]
fn one_step_matches_train_text_to_image_v_prediction() {
    one_step("sd2_v", "sd2_pipeline");
}

fn state(dir: &Path, part: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = match part {
        "vae" => vae::Vae::load(dir, Device::Cpu)
            .unwrap()
            .state_dict()
            .into_iter()
            .collect(),
        "text_encoder" => text::ClipTextModel::load(dir, Device::Cpu, text::DType::F32)
            .unwrap()
            .vs
            .variables()
            .into_iter()
            .collect(),
        _ => unet::ConditionUNet::load(dir, Device::Cpu)
            .unwrap()
            .vs
            .variables()
            .into_iter()
            .collect(),
    };
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn same(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0 && x.1.equal(&y.1))
}

/// Two steps of `--init-from` on a captioned folder at the pipeline's 64 x
/// 64: the VAE and text encoder come out bit-identical, the U-Net moves,
/// the betas and prediction type are the pipeline's, and the run folder
/// samples with `lmzh txt2img`.
#[test]
fn init_from_fine_tunes_the_unet_only() {
    let dir = tempfile::tempdir().unwrap();
    let src = sd_tiny("sd2_pipeline");
    let folder = common::captioned_squares(dir.path(), 8);
    let args = <Cmd as clap::Parser>::try_parse_from([
        "trainer",
        "--init-from",
        src.to_str().unwrap(),
        "--data",
        folder.to_str().unwrap(),
        "--set",
        "data.preprocess.resolution=64",
        "--set",
        "data.preprocess.channels=3",
    ])
    .unwrap();
    let mut c = args.args.resolve_config().unwrap();
    let base = common::tiny(dir.path(), "finetune", 2, 2);
    c.name = base.name;
    c.runs_dir = base.runs_dir;
    c.steps = 2;
    c.batch_size = 2;
    c.device = base.device;
    c.log = base.log;
    c.eval = base.eval;
    let s = train(c, &TrainOptions::default()).unwrap();
    let run = &s.run_dir;
    assert!(same(
        &state(&src.join("vae"), "vae"),
        &state(&run.join("vae"), "vae")
    ));
    assert!(same(
        &state(&src.join("text_encoder"), "text_encoder"),
        &state(&run.join("text_encoder"), "text_encoder")
    ));
    assert!(!same(
        &state(&src.join("unet"), "unet"),
        &state(&run.join("unet"), "unet")
    ));
    let saved = trainer::TrainConfig::load(&run.join("config.toml")).unwrap();
    assert_eq!(
        saved.noise.prediction_type,
        schedule::PredictionType::VPrediction
    );
    assert_eq!(
        saved.noise.beta_schedule,
        schedule::BetaSchedule::ScaledLinear
    );
    assert!(!saved.model.text.train_text_encoder);
    for f in [
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
    ] {
        assert_eq!(
            std::fs::read(src.join(f)).unwrap(),
            std::fs::read(run.join(f)).unwrap(),
            "{f}"
        );
    }
    let pipe = sampler::text_to_image::TextToImage::load(run, Device::Cpu).unwrap();
    assert_eq!(pipe.default_size(), (64, 64));
}

#[derive(clap::Parser)]
struct Cmd {
    #[command(flatten)]
    args: trainer::args::Args,
}
