//! The sampling loop on a text-conditioned U-Net against diffusers'
//! `StableDiffusionPipeline` loop (fixtures of
//! `scripts/gen_text_loop_fixtures.py`): from the same latents and prompt
//! embeddings, 10 steps of DDIM, Euler and DPM-Solver++ with guidance 1,
//! with guidance 7.5 away from a negative prompt, and with guidance 7.5 and
//! guidance_rescale 0.7, give the same final latents
//! (relative L2 error <= 1e-3; measured ~1e-6).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sampler::{by_name, sample, Batching, Cond, Conditioning, SolverOptions, TorchRng};
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use unet::ConditionUNet;

const TOLERANCE: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text_loop")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

#[test]
fn text_guided_sampling_matches_the_diffusers_pipeline_loop() {
    let unet_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../unet/tests/fixtures/condition/sd1_like");
    let unet = ConditionUNet::load(&unet_dir, Device::Cpu).unwrap();
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixtures().join("io.safetensors"), Device::Cpu).unwrap();
    let prompt = &io["prompt_embeds"];
    let negative = &io["negative_prompt_embeds"];
    let mut worst: f64 = 0.0;
    for name in ["ddim", "euler", "dpm++2m"] {
        let config =
            SchedulerConfig::load(fixtures().join(name).join("scheduler_config.json")).unwrap();
        for (guidance, batching, rescale) in [
            (1.0, Batching::Auto, 0.0),
            (7.5, Batching::Batched, 0.0),
            (7.5, Batching::Sequential, 0.0),
            (7.5, Batching::Auto, 0.7),
        ] {
            let mut solver = by_name(name, &config, 10, &SolverOptions::default()).unwrap();
            let mut conditioning = Conditioning::guided(
                Cond::text(prompt.shallow_clone(), None),
                guidance,
                Cond::text(negative.shallow_clone(), None),
            );
            if let Some(g) = conditioning.guidance.as_mut() {
                g.batching = batching;
                g.rescale = rescale;
            }
            let out = sample(
                &unet,
                solver.as_mut(),
                &io["latents"],
                &conditioning,
                &mut TorchRng,
                &mut |_| {},
            )
            .unwrap();
            let key = if rescale > 0.0 {
                format!("{name}_g{guidance:.1}_rescale{rescale:.1}")
            } else {
                format!("{name}_g{guidance:.1}")
            };
            let err = rel_l2(&out, &io[&key]);
            println!("{key} ({batching:?}): relative L2 error {err:.2e}");
            worst = worst.max(err);
        }
    }
    assert!(worst <= TOLERANCE, "worst relative L2 error {worst:.2e}");
}

#[test]
fn a_text_model_without_text_is_a_clear_error() {
    let unet_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../unet/tests/fixtures/condition/sd1_like");
    let unet = ConditionUNet::load(&unet_dir, Device::Cpu).unwrap();
    let x = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let t = Tensor::from_slice(&[10i64]);
    let err = sampler::Denoiser::forward(&unet, &x, &t, &Cond::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder_hidden_states"), "{err}");
}
