//! `lmzh edit --prompt` and `lmzh inpaint --prompt` end to end: flags parsed
//! as `lmzh` parses them, the tiny pipelines of
//! `scripts/gen_sd_editing_fixtures.py`, and a seed that gives diffusers'
//! images (`generator=torch.Generator().manual_seed(7)`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use sampler::cli::{edit, inpaint};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Parser)]
struct Cmd<A: clap::Args> {
    #[command(flatten)]
    args: A,
}

fn parse<A: clap::Args>(flags: &[&str]) -> A {
    let argv = std::iter::once("lmzh").chain(flags.iter().copied());
    Cmd::<A>::try_parse_from(argv).unwrap().args
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sd_tiny")
        .join(name)
        .display()
        .to_string()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}

fn reference(key: &str) -> Tensor {
    let io: BTreeMap<String, Tensor> =
        tensor::safetensors::load(fixture("editing.safetensors"), Device::Cpu).unwrap();
    io[key].shallow_clone()
}

fn images() -> String {
    format!(
        "{},{}",
        fixture("edit_input_0.png"),
        fixture("edit_input_1.png")
    )
}

const PROMPTS: [&str; 4] = [
    "--prompt",
    "a red circle on a white field",
    "--prompt",
    "Two cats, 3 dogs!",
];

#[test]
fn edit_with_a_prompt_gives_diffusers_img2img() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("edited.png");
    let compare = dir.path().join("compare.png");
    let tensors = dir.path().join("out.safetensors");
    let pipeline = fixture("pipeline");
    let images = images();
    let mut flags = vec![
        "--model",
        &pipeline,
        "--device",
        "cpu",
        "--image",
        &images,
        "--strength",
        "0.6",
        "--steps",
        "10",
        "--negative-prompt",
        "blurry",
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
        "--compare",
        compare.to_str().unwrap(),
        "--save-tensors",
        tensors.to_str().unwrap(),
    ];
    flags.extend(PROMPTS);
    let summary = edit::run(&parse::<edit::Args>(&flags)).unwrap();
    // The pipeline's scheduler (PNDM), 6 of 10 steps (7 evaluations: PLMS
    // evaluates its first step twice), guidance 7.5 by default.
    assert!(summary.solver.starts_with("pndm"), "{summary}");
    assert_eq!(summary.runs[0].2, 7, "{summary}");
    let got = tensor::safetensors::load(&tensors, Device::Cpu).unwrap();
    let err = rel_l2(&got["latents"], &reference("img2img_pndm_latents"));
    assert!(err <= 1e-3, "latents rel L2 {err:.2e}");
    let samples = (&got["samples"] + 1.0) / 2.0;
    let err = rel_l2(&samples, &reference("img2img_pndm_images"));
    assert!(err <= 1e-3, "images rel L2 {err:.2e}");
    // Two results in a row; the compare grid has the inputs above them.
    assert_eq!(image::image_dimensions(&out).unwrap(), (2 * 64 + 6, 64 + 4));
    assert_eq!(
        image::image_dimensions(&compare).unwrap(),
        (2 * 64 + 6, 2 * 64 + 6)
    );
}

#[test]
fn inpaint_with_a_prompt_gives_diffusers_inpainting() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("filled.png");
    let tensors = dir.path().join("out.safetensors");
    let images = images();
    let mask = fixture("edit_mask.png");
    for (model, key) in [
        ("inpaint_pipeline", "inpaint9_pndm"),
        ("pipeline", "inpaint_pndm"),
    ] {
        let model = fixture(model);
        let mut flags = vec![
            "--model",
            &model,
            "--device",
            "cpu",
            "--image",
            &images,
            "--mask",
            &mask,
            "--steps",
            "10",
            "--negative-prompt",
            "blurry",
            "--seed",
            "7",
            "--out",
            out.to_str().unwrap(),
            "--save-tensors",
            tensors.to_str().unwrap(),
        ];
        flags.extend(PROMPTS);
        let summary = inpaint::run(&parse::<inpaint::Args>(&flags)).unwrap();
        assert_eq!(summary.model_evaluations, 11, "{summary}");
        let got = tensor::safetensors::load(&tensors, Device::Cpu).unwrap();
        let err = rel_l2(&got["latents"], &reference(&format!("{key}_latents")));
        assert!(err <= 1e-3, "{key}: latents rel L2 {err:.2e}");
    }
}

#[test]
fn text_flags_and_folders_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let out = out.to_str().unwrap();
    let pipeline = fixture("pipeline");
    let input = fixture("edit_input_0.png");
    let digits = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/models/digits")
        .display()
        .to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // A Stable Diffusion folder without --prompt.
        (vec!["--model", &pipeline], "give --prompt"),
        // A text flag without --prompt.
        (
            vec!["--model", &digits, "--negative-prompt", "x"],
            "--negative-prompt applies to text-guided editing",
        ),
        // --prompt with a class model folder.
        (
            vec!["--model", &digits, "--prompt", "x"],
            "a DDPMPipeline folder",
        ),
        // Labels and a prompt.
        (
            vec!["--model", &pipeline, "--prompt", "x", "--labels", "3"],
            "--labels",
        ),
        // Two prompts for three images.
        (
            vec![
                "--model", &pipeline, "--prompt", "x", "--prompt", "y", "--image", &input,
                "--image", &input, "--image", &input,
            ],
            "must be a multiple",
        ),
    ];
    for (flags, needle) in cases {
        let mut all = vec!["--device", "cpu", "--out", out, "--steps", "2"];
        if !flags.contains(&"--image") {
            all.extend(["--image", &input]);
        }
        all.extend(flags.iter().copied());
        let e = edit::run(&parse::<edit::Args>(&all))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{all:?}: {e}");
    }
    // RePaint flags and text-only flags do not mix.
    let mask = fixture("edit_mask.png");
    let e = inpaint::run(&parse::<inpaint::Args>(&[
        "--model",
        &digits,
        "--image",
        &input,
        "--mask",
        &mask,
        "--strength",
        "0.5",
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("--strength applies to --prompt"), "{e}");
}
