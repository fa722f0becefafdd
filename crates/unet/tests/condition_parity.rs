//! Parity with diffusers' `UNet2DConditionModel` on the fixtures of
//! `scripts/gen_unet_condition_fixtures.py`: same forward output (float32,
//! CPU, relative L2 error <= 1e-4) from the folders diffusers saved, and a
//! folder we save loads back to the same numbers.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::rel_l2;
use tch::{Device, Tensor};
use unet::unet_2d_condition::Conditioning;
use unet::{ConditionUNet, UNetConditionConfig};

const TOLERANCE: f64 = 1e-4;
const CASES: &[&str] = &[
    "sd1_like",
    "sd2_like_odd_size_mask",
    "class_scale_shift_no_mid",
    "text_time_pooled",
];

fn case_dir(case: &str) -> PathBuf {
    let dir = common::fixtures().join("condition").join(case);
    assert!(
        dir.join("io.safetensors").is_file(),
        "fixture {} is missing: run `cargo xtask py scripts/gen_unet_condition_fixtures.py`",
        dir.display()
    );
    dir
}

fn io(case: &str) -> BTreeMap<String, Tensor> {
    tensor::safetensors::load(case_dir(case).join("io.safetensors"), Device::Cpu).unwrap()
}

fn run(unet: &ConditionUNet, io: &BTreeMap<String, Tensor>) -> unet::Result<Tensor> {
    let cond = Conditioning {
        encoder_hidden_states: &io["encoder_hidden_states"],
        encoder_attention_mask: io.get("encoder_attention_mask"),
        class_labels: io.get("class_labels"),
    };
    tch::no_grad(|| unet.forward(&io["sample"], &io["timesteps"], cond))
}

#[test]
fn forward_matches_diffusers_on_every_case() {
    let mut report = Vec::new();
    for case in CASES {
        let unet = ConditionUNet::load(case_dir(case), Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let io = io(case);
        let out = run(&unet, &io).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(out.size(), io["output"].size(), "{case}");
        let err = rel_l2(&out, &io["output"]);
        println!("{case}: relative L2 error {err:.3e}");
        report.push((case, err));
    }
    for (case, err) in report {
        assert!(
            err <= TOLERANCE,
            "{case}: relative L2 error {err:.3e} > {TOLERANCE:e}"
        );
    }
}

#[test]
fn the_mask_and_the_text_change_the_output() {
    let case = "sd2_like_odd_size_mask";
    let unet = ConditionUNet::load(case_dir(case), Device::Cpu).unwrap();
    let mut io = io(case);
    let with_mask = run(&unet, &io).unwrap();
    let _ = io.remove("encoder_attention_mask");
    let without = run(&unet, &io).unwrap();
    // Sample 0 has two masked tokens, sample 1 none.
    assert!(rel_l2(&with_mask.get(0), &without.get(0)) > 1e-4);
    assert!(rel_l2(&with_mask.get(1), &without.get(1)) < 1e-6);
    // One text for the whole batch is broadcast.
    let one = io["encoder_hidden_states"].narrow(0, 0, 1);
    io.insert("encoder_hidden_states".into(), one);
    let shared = run(&unet, &io).unwrap();
    assert!(rel_l2(&shared.get(0), &without.get(0)) < 1e-6);
    assert!(rel_l2(&shared.get(1), &without.get(1)) > 1e-4);
}

#[test]
fn saved_folders_load_back_and_bad_inputs_are_errors() {
    let case = "sd1_like";
    let unet = ConditionUNet::load(case_dir(case), Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    unet.save(tmp.path()).unwrap();
    let again = ConditionUNet::load(tmp.path(), Device::Cpu).unwrap();
    let io = io(case);
    assert!(rel_l2(&run(&again, &io).unwrap(), &io["output"]) <= TOLERANCE);
    let saved = UNetConditionConfig::from_file(tmp.path().join("config.json")).unwrap();
    assert_eq!(&saved, unet.config());
    assert_eq!(saved.extra["_class_name"], "UNet2DConditionModel");

    let states = &io["encoder_hidden_states"];
    let wrong_width = states.narrow(2, 0, 8);
    let cond = Conditioning::text(&wrong_width);
    let err = unet
        .forward(&io["sample"], &io["timesteps"], cond)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder_hidden_states") && err.contains("16"),
        "{err}"
    );
    let mask = Tensor::ones([2, 3], (tch::Kind::Float, Device::Cpu));
    let cond = Conditioning {
        encoder_attention_mask: Some(&mask),
        ..Conditioning::text(states)
    };
    let err = unet
        .forward(&io["sample"], &io["timesteps"], cond)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder_attention_mask"), "{err}");
    let labels = Tensor::from_slice(&[0i64, 1]);
    let cond = Conditioning {
        class_labels: Some(&labels),
        ..Conditioning::text(states)
    };
    let err = unet
        .forward(&io["sample"], &io["timesteps"], cond)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no class embedding"), "{err}");
}

#[test]
fn the_published_stable_diffusion_layout_has_its_parameter_count() {
    // CompVis/stable-diffusion-v1-4's U-Net: 859,520,964 parameters.
    let cfg = UNetConditionConfig::stable_diffusion_v1();
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let shapes = tch::no_grad(|| unet::UNet2DConditionModel::new(vs.root(), &cfg)).unwrap();
    let total: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    assert_eq!(total, 859_520_964);
    drop(shapes);
}
