//! Latent mode: a text-to-image U-Net trained on the latents of a frozen
//! VAE (`model.text.vae`), whose run folder is a whole
//! `StableDiffusionPipeline`; exact resume; bad VAEs named.

mod common;

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
use trainer::{checkpoint, train, Error, TrainConfig, TrainOptions};
use vae::{config::SampleSize, Vae, VaeConfig};

/// Tests that train take turns: every step reseeds libtorch's one
/// generator (exact resume compares bits).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

use common::SQUARE_CAPTIONS as CAPTIONS;

/// A random grey VAE with 2-channel latents, 2x smaller on each side,
/// saved as a diffusers `vae/` folder in `dir/vae-src`.
fn tiny_vae(dir: &Path, in_channels: i64) -> PathBuf {
    let cfg = VaeConfig {
        in_channels,
        out_channels: in_channels,
        down_block_types: vec!["DownEncoderBlock2D".into(); 2],
        up_block_types: vec!["UpDecoderBlock2D".into(); 2],
        block_out_channels: vec![8, 8],
        layers_per_block: 1,
        latent_channels: 2,
        norm_num_groups: 4,
        sample_size: SampleSize::Square(8),
        scaling_factor: 0.5,
        ..VaeConfig::default()
    };
    tch::manual_seed(11);
    let vae = Vae::new(&cfg, Device::Cpu).unwrap();
    let path = dir.join(format!("vae-src-{in_channels}"));
    vae.save(&path).unwrap();
    path
}

/// A tiny text run on 8 captioned squares in the latent space of `vae`.
fn tiny_latent(dir: &Path, name: &str, steps: u64, vae: &Path) -> TrainConfig {
    let mut c = common::tiny_text(dir, name, steps, 8);
    c.model.text.vae = Some(vae.to_path_buf());
    c
}

fn weights(dir: &Path) -> Vec<(String, Tensor)> {
    let vae = Vae::load(dir, Device::Cpu).unwrap();
    vae.state_dict().into_iter().collect()
}

#[test]
fn a_latent_run_keeps_its_vae_frozen_and_is_a_stable_diffusion_pipeline() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_vae(dir.path(), 1);
    let mut c = tiny_latent(dir.path(), "latent", 3, &src);
    c.log.sample_every = 3;
    c.model.text.sample_prompts = vec![CAPTIONS[0].into(), CAPTIONS[1].into()];
    let s = train(c, &TrainOptions::default()).unwrap();

    // The run's VAE is the source, bit for bit.
    let (a, b) = (weights(&src), weights(&s.run_dir.join("vae")));
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka}");
    }
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.run_dir.join("model_index.json")).unwrap())
            .unwrap();
    assert_eq!(index["_class_name"], "StableDiffusionPipeline");
    assert_eq!(
        index["vae"],
        serde_json::json!(["diffusers", "AutoencoderKL"])
    );
    // Latents are not clipped when sampling, and diffusers' pipeline would
    // impose steps_offset 1: the run's scheduler says both.
    let sched: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.run_dir.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (&sched["clip_sample"], &sched["steps_offset"]),
        (&serde_json::json!(false), &serde_json::json!(1))
    );
    // The U-Net denoises 2 x 4 x 4 latents.
    let unet = unet::UNetConditionConfig::from_file(s.run_dir.join("unet/config.json")).unwrap();
    assert_eq!((unet.in_channels, unet.out_channels), (2, 2));
    assert_eq!(unet.sample_hw(), Some((4, 4)));
    // The grid shows decoded 8x8 images, one column per prompt.
    let grid = image::open(s.run_dir.join("samples/step-000003.png")).unwrap();
    assert_eq!(grid.width(), 2 * 8 + 3 * 2);

    // The pipeline loads with its VAE and samples 8x8 pictures.
    let pipe = sampler::text_to_image::TextToImage::load(&s.run_dir, Device::Cpu).unwrap();
    assert!(pipe.vae.is_some());
    assert_eq!((pipe.vae_scale_factor(), pipe.default_size()), (2, (8, 8)));
    let out = dir.path().join("txt2img");
    let args = <Txt2Img as clap::Parser>::try_parse_from([
        "txt2img",
        "--model",
        s.run_dir.to_str().unwrap(),
        "--prompt",
        CAPTIONS[1],
        "--sampler",
        "ddim",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let line = sampler::cli::txt2img::run(&args.args).unwrap();
    assert!(line.contains("1 image(s) of 8x8"), "{line}");
}

#[derive(clap::Parser)]
struct Txt2Img {
    #[command(flatten)]
    args: sampler::cli::txt2img::Args,
}

#[test]
fn a_latent_run_resumes_bit_identically() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let src = tiny_vae(dir.path(), 1);
    let straight = train(
        tiny_latent(dir.path(), "straight", 4, &src),
        &TrainOptions::default(),
    )
    .unwrap();
    let first = train(
        tiny_latent(dir.path(), "split", 4, &src),
        &TrainOptions {
            stop_after: Some(2),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    let (_, ck) = checkpoint::list(&first.run_dir.join("checkpoints"))
        .pop()
        .unwrap();
    // The source VAE is gone: the resumed run reads its own copy.
    std::fs::remove_dir_all(&src).unwrap();
    let resumed = train(
        tiny_latent(dir.path(), "ignored", 4, &src),
        &TrainOptions {
            resume: Some(ck),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, 4);
    assert_eq!(resumed.params_digest, straight.params_digest);
}

#[test]
fn a_vae_that_does_not_fit_the_data_is_named() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    // An RGB VAE for grey data.
    let rgb = tiny_vae(dir.path(), 3);
    let err = train(
        tiny_latent(dir.path(), "rgb", 1, &rgb),
        &TrainOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Setting { .. }), "{msg}");
    assert!(
        msg.contains("model.text.vae") && msg.contains("3-channel"),
        "{msg}"
    );
    // Images whose side the VAE's factor does not divide.
    let grey = tiny_vae(dir.path(), 1);
    let mut c = tiny_latent(dir.path(), "odd", 1, &grey);
    c.data.preprocess.resolution = Some(7);
    let msg = train(c, &TrainOptions::default()).unwrap_err().to_string();
    assert!(
        msg.contains("model.text.vae") && msg.contains("multiple of 2"),
        "{msg}"
    );
    // No VAE there at all.
    let c = tiny_latent(dir.path(), "missing", 1, &dir.path().join("nowhere"));
    let msg = train(c, &TrainOptions::default()).unwrap_err().to_string();
    assert!(
        msg.contains("model.text.vae") && msg.contains("nowhere"),
        "{msg}"
    );
}

/// Writes a latent run folder and what `lmzh txt2img` makes of it from fixed
/// latents (DDIM, 4 steps, guidance 2, the two captions) for diffusers to
/// check; with `LMZH_LATENT_CHECK_DIR=DIR` it stays there, then
/// `cargo xtask py scripts/check_latent_run.py DIR` loads `DIR/run` with
/// `StableDiffusionPipeline.from_pretrained` and compares the images.
#[test]
fn a_latent_run_exports_for_the_diffusers_check() {
    use sampler::text_to_image::{Prompts, TextToImage};
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let dest = std::env::var_os("LMZH_LATENT_CHECK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("check"));
    let src = tiny_vae(tmp.path(), 1);
    let s = train(
        tiny_latent(tmp.path(), "check", 3, &src),
        &TrainOptions::default(),
    )
    .unwrap();
    let pipe = TextToImage::load(&s.run_dir, Device::Cpu).unwrap();
    let prompts = Prompts {
        prompts: CAPTIONS.iter().map(|c| c.to_string()).collect(),
        negative_prompt: None,
        guidance_scale: 2.0,
        guidance_rescale: 0.0,
        images_per_prompt: 1,
        clip_skip: None,
    };
    let encoded = pipe.encode(&prompts).unwrap();
    tch::manual_seed(3);
    let latents = Tensor::randn(
        pipe.latent_shape(2, 8, 8).unwrap(),
        (tch::Kind::Float, Device::Cpu),
    );
    let mut solver = sampler::by_name(
        "ddim",
        &pipe.scheduler,
        4,
        &sampler::SolverOptions::default(),
    )
    .unwrap();
    let out = sampler::sample(
        &pipe.unet,
        solver.as_mut(),
        &latents,
        &encoded.conditioning,
        &mut sampler::TorchRng,
        &mut |_| {},
    )
    .unwrap();
    let images = pipe.decode(&out).unwrap();
    assert_eq!(images.size(), [2, 1, 8, 8]);
    let run = dest.join("run");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    for part in ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] {
        let to = run.join(part);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(s.run_dir.join(part)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    std::fs::copy(
        s.run_dir.join("model_index.json"),
        run.join("model_index.json"),
    )
    .unwrap();
    Tensor::write_safetensors(
        &[("latents", &latents), ("images", &images)],
        dest.join("io.safetensors"),
    )
    .unwrap();
}
