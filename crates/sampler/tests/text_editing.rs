//! Text-guided editing against diffusers' `StableDiffusionImg2ImgPipeline`
//! and `StableDiffusionInpaintPipeline` (4-channel U-Net with mask
//! blending, and a 9-channel inpainting U-Net), on the tiny pipelines and
//! inputs of `scripts/gen_sd_editing_fixtures.py`: the same PNG files and
//! seed (`torch.Generator().manual_seed(7)` there, libtorch's CPU generator
//! here) give the same final latents and images (relative L2 <= 1e-3).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sampler::text_editing::{inpaint_by_channels, load_mask, load_rgb_images, EditNoise};
use sampler::text_to_image::{Prompts, TextToImage};
use sampler::{by_name, SolverOptions, TorchRng};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd_tiny")
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

#[test]
fn edits_match_the_diffusers_img2img_and_inpaint_pipelines() {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("editing.json")).unwrap())
            .unwrap();
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixtures().join("editing.safetensors"), Device::Cpu).unwrap();
    let plain = TextToImage::load(fixtures().join("pipeline"), Device::Cpu).unwrap();
    let inpainting = TextToImage::load(fixtures().join("inpaint_pipeline"), Device::Cpu).unwrap();
    let prompts: Vec<String> = meta["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let paths: Vec<PathBuf> = meta["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| fixtures().join(p.as_str().unwrap()))
        .collect();
    let images = load_rgb_images(&paths, None, 8).unwrap();
    assert_eq!(images.size(), [2, 3, 64, 64]);
    let mask = load_mask(&fixtures().join(meta["mask"].as_str().unwrap()), 64, 64, 8).unwrap();
    let seed = meta["seed"].as_i64().unwrap();
    let steps = meta["steps"].as_u64().unwrap() as usize;
    let mut worst: f64 = 0.0;
    for case in meta["cases"].as_array().unwrap() {
        let key = case["key"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        let strength = case["strength"].as_f64().unwrap();
        let guidance = case["guidance"].as_f64().unwrap();
        let pipe = if kind == "inpaint9" {
            &inpainting
        } else {
            &plain
        };
        let encoded = pipe
            .encode(&Prompts {
                prompts: prompts.clone(),
                negative_prompt: (guidance > 1.0)
                    .then(|| meta["negative_prompt"].as_str().unwrap().into()),
                guidance_scale: guidance,
                guidance_rescale: 0.0,
                images_per_prompt: 1,
                clip_skip: None,
            })
            .unwrap();
        let mut solver = by_name(
            case["sampler"].as_str().unwrap(),
            &pipe.scheduler,
            steps,
            &SolverOptions::default(),
        )
        .unwrap();
        tch::manual_seed(seed);
        let latents = if kind == "img2img" {
            let draws = EditNoise::img2img(2, encoded.batch, [4, 8, 8]);
            pipe.img2img(
                &pipe.unet,
                solver.as_mut(),
                &encoded.conditioning,
                &images,
                strength,
                &draws,
                &mut TorchRng,
                &mut |_| {},
            )
            .unwrap()
        } else {
            let by_channels = inpaint_by_channels(pipe.unet.config().in_channels, 4).unwrap();
            assert_eq!(by_channels, kind == "inpaint9");
            let draws =
                EditNoise::inpaint(2, encoded.batch, [4, 8, 8], !by_channels || strength < 1.0);
            let inputs = pipe
                .inpaint_latents(&images, &mask, encoded.batch, &draws)
                .unwrap();
            pipe.inpaint(
                &pipe.unet,
                solver.as_mut(),
                &encoded.conditioning,
                &inputs,
                strength,
                &draws.noise,
                &mut TorchRng,
                &mut |_| {},
            )
            .unwrap()
        };
        let want = &io[&format!("{key}_latents")];
        let err = rel_l2(&latents, want);
        let pictures = pipe.decode(&latents).unwrap();
        let err_images = rel_l2(&pictures, &io[&format!("{key}_images")]);
        eprintln!("{key}: latents rel L2 {err:.2e}, images {err_images:.2e}");
        assert!(err <= TOLERANCE, "{key}: latents rel L2 {err}");
        assert!(err_images <= TOLERANCE, "{key}: images rel L2 {err_images}");
        worst = worst.max(err);
        if kind == "inpaint" {
            // Blending keeps the unmasked latents exactly the image's.
            let keep = mask
                .upsample_nearest2d([8, 8], None, None)
                .lt(0.5)
                .expand([2, 4, 8, 8], false);
            let kept = latents.masked_select(&keep);
            let ref_kept = want.masked_select(&keep);
            assert!(rel_l2(&kept, &ref_kept) <= TOLERANCE, "{key}");
        }
    }
    eprintln!("worst latents rel L2 {worst:.2e}");
}

#[test]
fn bad_edit_inputs_are_clear_errors() {
    let pipe = TextToImage::load(fixtures().join("pipeline"), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // An image whose sides round down to nothing.
    let tiny = dir.path().join("tiny.png");
    image::RgbImage::new(5, 5).save(&tiny).unwrap();
    let e = load_rgb_images(&[&tiny], None, 8).unwrap_err().to_string();
    assert!(
        e.contains("tiny.png") && e.contains("multiples of 8"),
        "{e}"
    );
    // A second image of another size is resized to the first's.
    let a = dir.path().join("a.png");
    let b = dir.path().join("b.png");
    image::RgbImage::new(64, 48).save(&a).unwrap();
    image::RgbImage::new(30, 20).save(&b).unwrap();
    assert_eq!(
        load_rgb_images(&[&a, &b], None, 8).unwrap().size(),
        [2, 3, 48, 64]
    );
    // A strength outside [0, 1] names strength.
    let mut solver = by_name("ddim", &pipe.scheduler, 4, &SolverOptions::default()).unwrap();
    let encoded = pipe
        .encode(&Prompts {
            prompts: vec!["x".into()],
            negative_prompt: None,
            guidance_scale: 1.0,
            guidance_rescale: 0.0,
            images_per_prompt: 3,
            clip_skip: None,
        })
        .unwrap();
    let images = load_rgb_images(&[&a, &a], None, 8).unwrap();
    let draws = EditNoise::img2img(2, 3, [4, 6, 8]);
    let e = pipe
        .img2img(
            &pipe.unet,
            solver.as_mut(),
            &encoded.conditioning,
            &images,
            0.5,
            &draws,
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 input images for 3 images"), "{e}");
    let e = pipe
        .img2img(
            &pipe.unet,
            solver.as_mut(),
            &encoded.conditioning,
            &images,
            1.5,
            &draws,
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("strength 1.5"), "{e}");
}
