//! Text-conditioned training in pixel space: captions through the loader,
//! a CLIP text encoder trained with the U-Net, exact resume, the frozen
//! encoder, and the run folder as a text-to-image pipeline.

mod common;

use std::path::Path;

use tch::{Device, Tensor};
use trainer::config::Conditioning;
use trainer::{checkpoint, train, TrainConfig, TrainOptions, Trainer};

/// libtorch's generator is one per process, and every training step seeds
/// it: tests that train in this process take turns, so that no test draws
/// from another's stream (exact resume compares bits).
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

use common::SQUARE_CAPTIONS as CAPTIONS;

/// A tiny text-conditioned run on 16 captioned squares.
fn tiny_text(dir: &Path, name: &str, steps: u64) -> TrainConfig {
    common::tiny_text(dir, name, steps, 16)
}

fn digest_of(map: &std::collections::BTreeMap<String, Tensor>, prefix: &str) -> u64 {
    let v: Vec<(String, Tensor)> = map
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    assert!(!v.is_empty(), "no {prefix} tensors");
    trainer::distributed::digest(&v)
}

fn last_checkpoint(run: &Path) -> checkpoint::Checkpoint {
    let (_, p) = checkpoint::list(&run.join("checkpoints")).pop().unwrap();
    checkpoint::load(&p, Device::Cpu).unwrap()
}

#[test]
fn captions_choose_text_conditioning_and_reach_the_step() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let mut t = Trainer::new(
        tiny_text(dir.path(), "plumbing", 2),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(
        t.config().model.conditioning,
        Conditioning::Text,
        "auto -> text"
    );
    assert!(t.unet().is_none() && t.model().text().is_some());
    let names: Vec<&str> = t.params().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("unet.")));
    assert!(names.iter().any(|n| n.starts_with("text_encoder.")));
    let batches = t.next_batches().unwrap();
    let mb = &batches[0];
    let captions = mb.captions.as_ref().expect("captions in the batch");
    assert_eq!(captions.len(), 4);
    assert!(captions
        .iter()
        .all(|c| c.is_empty() || CAPTIONS.contains(&c.as_str())));
    let out = t.step(&batches).unwrap();
    assert!(!out.skipped && out.loss.is_finite());
    // A batch without captions is an error naming what is missing.
    let bare = [trainer::MicroBatch {
        images: mb.images.shallow_clone(),
        labels: None,
        captions: None,
    }];
    let err = t.step(&bare).unwrap_err().to_string();
    assert!(err.contains("captions"), "{err}");
    // proportion_empty_prompts reaches the loader: 1 empties every caption.
    let mut c = tiny_text(dir.path(), "all-empty", 1);
    c.model.text.proportion_empty_prompts = 1.0;
    let mut t = Trainer::new(c, &TrainOptions::default()).unwrap();
    let captions = t.next_batches().unwrap()[0].captions.clone().unwrap();
    assert!(captions.iter().all(String::is_empty), "{captions:?}");
    let mut c = tiny_text(dir.path(), "none-empty", 1);
    c.model.text.proportion_empty_prompts = 0.0;
    let mut t = Trainer::new(c, &TrainOptions::default()).unwrap();
    let captions = t.next_batches().unwrap()[0].captions.clone().unwrap();
    assert!(
        captions.iter().all(|c| CAPTIONS.contains(&c.as_str())),
        "{captions:?}"
    );
    // Conditioning can be forced off: the same folder trains a plain U-Net.
    let mut c = tiny_text(dir.path(), "forced-none", 1);
    c.model.conditioning = Conditioning::None;
    let t = Trainer::new(c, &TrainOptions::default()).unwrap();
    assert!(t
        .unet()
        .is_some_and(|u| u.config().num_class_embeds.is_none()));
    // Text conditioning needs captions.
    let mut c = tiny_text(dir.path(), "no-captions", 1);
    c.data.source = data_pipeline::source::SourceSpec::Digits;
    c.model.conditioning = Conditioning::Text;
    let err = Trainer::new(c, &TrainOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("captions"), "{err}");
}

#[test]
fn a_text_run_resumes_bit_identically() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let straight = train(
        tiny_text(dir.path(), "straight", 6),
        &TrainOptions::default(),
    )
    .unwrap();
    let first = train(
        tiny_text(dir.path(), "split", 6),
        &TrainOptions {
            stop_after: Some(3),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(first.steps, 3);
    let (_, ck) = checkpoint::list(&first.run_dir.join("checkpoints"))
        .pop()
        .unwrap();
    let resumed = train(
        tiny_text(dir.path(), "ignored", 6),
        &TrainOptions {
            resume: Some(ck),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, 6);
    assert_eq!(resumed.params_digest, straight.params_digest);
    let (a, b) = (
        last_checkpoint(&straight.run_dir),
        last_checkpoint(&resumed.run_dir),
    );
    for prefix in ["unet.", "text_encoder."] {
        assert_eq!(
            digest_of(&a.model, prefix),
            digest_of(&b.model, prefix),
            "{prefix}"
        );
        assert_eq!(
            digest_of(&a.ema, prefix),
            digest_of(&b.ema, prefix),
            "ema {prefix}"
        );
    }
    assert_eq!(a.optim.len(), b.optim.len());
    for (k, t) in &a.optim {
        assert!(t.equal(&b.optim[k]), "optim.{k}");
    }
}

#[test]
fn a_frozen_text_encoder_keeps_its_weights_and_a_trained_one_moves() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    // The initial weights, by name as in the checkpoints.
    let initial = |prefix: &str| {
        let t = Trainer::new(
            tiny_text(dir.path(), "initial", 1),
            &TrainOptions::default(),
        )
        .unwrap();
        let v: Vec<(String, Tensor)> = t
            .model()
            .variables()
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        trainer::distributed::digest(&v)
    };
    let (unet0, text0) = (initial("unet."), initial("text_encoder."));
    let mut frozen = tiny_text(dir.path(), "frozen", 3);
    frozen.model.text.train_text_encoder = false;
    let frozen = train(frozen, &TrainOptions::default()).unwrap();
    let trained = train(
        tiny_text(dir.path(), "trained", 3),
        &TrainOptions::default(),
    )
    .unwrap();
    let (f, t) = (
        last_checkpoint(&frozen.run_dir),
        last_checkpoint(&trained.run_dir),
    );
    assert_eq!(
        digest_of(&f.model, "text_encoder."),
        text0,
        "frozen: bit-identical"
    );
    assert!(
        !f.ema.keys().any(|k| k.starts_with("text_encoder.")),
        "no EMA of a frozen encoder"
    );
    assert_ne!(
        digest_of(&t.model, "text_encoder."),
        text0,
        "trained: moved"
    );
    assert!(t.ema.keys().any(|k| k.starts_with("text_encoder.")));
    // The frozen run's U-Net trained all the same.
    assert_ne!(digest_of(&f.model, "unet."), unet0);
}

#[test]
fn the_run_folder_is_a_pixel_space_text_to_image_pipeline() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny_text(dir.path(), "pipeline", 2);
    c.log.sample_images = 4;
    c.model.text.sample_prompts = vec![CAPTIONS[0].into(), CAPTIONS[1].into()];
    let s = train(c, &TrainOptions::default()).unwrap();
    for f in [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "scheduler/scheduler_config.json",
        "samples/step-000002.png",
    ] {
        assert!(s.run_dir.join(f).is_file(), "{f}");
    }
    assert!(!s.run_dir.join("vae").exists());
    // One column per prompt: 2 columns of 8x8 images with 2 px padding.
    let grid = image::open(s.run_dir.join("samples/step-000002.png")).unwrap();
    assert_eq!(
        grid.width(),
        2 * 8 + 3 * 2,
        "{}x{}",
        grid.width(),
        grid.height()
    );
    let pipe = sampler::text_to_image::TextToImage::load(&s.run_dir, Device::Cpu).unwrap();
    assert!(pipe.vae.is_none());
    assert_eq!((pipe.vae_scale_factor(), pipe.default_size()), (1, (8, 8)));
    assert_eq!(pipe.tokenizer.model_max_length(), 8);
    // The exported text encoder is the EMA one of the last checkpoint.
    let ck = last_checkpoint(&s.run_dir);
    let te: Vec<(String, Tensor)> = {
        let mut v: Vec<(String, Tensor)> = pipe
            .text_encoder
            .vs
            .variables()
            .into_iter()
            .map(|(k, t)| (format!("text_encoder.{k}"), t))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(
        trainer::distributed::digest(&te),
        digest_of(&ck.ema, "text_encoder.")
    );
    // lmzh txt2img samples from it.
    let out = dir.path().join("txt2img");
    let args = <Txt2Img as clap::Parser>::try_parse_from([
        "txt2img",
        "--model",
        s.run_dir.to_str().unwrap(),
        "--prompt",
        CAPTIONS[1],
        "--prompt",
        CAPTIONS[0],
        "--sampler",
        "ddim",
        "--steps",
        "3",
        "--guidance-scale",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    let line = sampler::cli::txt2img::run(&args.args).unwrap();
    assert!(line.contains("2 image(s) of 8x8"), "{line}");
    let img = image::open(out.join("image-000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (8, 8));
}

#[derive(clap::Parser)]
struct Txt2Img {
    #[command(flatten)]
    args: sampler::cli::txt2img::Args,
}

/// The `captioned-digits` preset: text conditioning on the bundled
/// two-digit canvases, no flips, 32 x 32 grey, a U-Net without attention at
/// full resolution, sample prompts with held-out pairs; one step trains.
#[test]
fn the_captioned_digits_preset_trains_text_to_image_without_flips() {
    use data_pipeline::source::captioned_digits::HELD_OUT_PAIRS;
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let mut c = TrainConfig::preset("captioned-digits").unwrap();
    assert!(!c.data.preprocess.random_flip, "a flip breaks the captions");
    assert_eq!(c.model.conditioning, Conditioning::Text);
    assert_eq!(c.model.text.proportion_empty_prompts, 0.1);
    assert_eq!(c.log.sampler, "dpm++2m");
    assert!(c.log.guidance_scale > 1.0);
    let held_out = c
        .model
        .text
        .sample_prompts
        .iter()
        .filter(|p| {
            HELD_OUT_PAIRS.iter().any(|&(l, r)| {
                p.ends_with(&format!("{l} to the left of a {r}")) || {
                    p.ends_with(&format!("{l} to the left of an {r}"))
                }
            })
        })
        .count();
    assert!(held_out >= 2, "{:?}", c.model.text.sample_prompts);
    c.runs_dir = dir.path().to_path_buf();
    c.name = "captioned-digits".into();
    c.device = tensor::DeviceSpec::Cpu;
    c.steps = 1;
    c.batch_size = 4;
    let mut t = Trainer::new(c, &TrainOptions::default()).unwrap();
    let m = t.model().text().expect("a text model");
    let u = m.unet.config();
    assert_eq!(
        (u.in_channels, u.sample_hw()),
        (1, Some((32, 32))),
        "32 x 32 grey"
    );
    // No attention at 32 x 32 (1,024 positions): cross-attention at 8 x 8.
    assert_eq!(u.down_block_types[0], "DownBlock2D");
    assert_eq!(u.down_block_types[2], "CrossAttnDownBlock2D");
    let unet_params: i64 = m
        .unet
        .vs
        .trainable_variables()
        .iter()
        .map(Tensor::numel)
        .sum::<usize>() as i64;
    eprintln!("captioned-digits U-Net: {unet_params} weights");
    assert!(
        (500_000..3_000_000).contains(&unet_params),
        "{unet_params} U-Net weights"
    );
    let batches = t.next_batches().unwrap();
    assert_eq!(batches[0].images.size(), [4, 1, 32, 32]);
    let captions = batches[0].captions.clone().unwrap();
    assert!(
        captions.iter().all(|c| c.is_empty()
            || c.chars().any(|ch| ch.is_ascii_digit())
            || c.contains(" and ")
            || c.contains("next to")),
        "{captions:?}"
    );
    let out = t.step(&batches).unwrap();
    assert!(!out.skipped && out.loss.is_finite());
}
