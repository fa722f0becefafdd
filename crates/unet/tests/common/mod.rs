//! Helpers shared by the integration tests of `unet`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use tch::{Device, Tensor};

/// The parity cases `scripts/gen_unet_fixtures.py` writes.
pub const CASES: &[&str] = &[
    "uncond_grey28",
    "classcond_rgb32_scale_shift",
    "fourier_grey16",
    "timestep_class_resnet_resample_rect",
    "identity_class_no_mid_attn",
];

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture folder of a case; panics with the regeneration command if missing.
pub fn case_dir(case: &str) -> PathBuf {
    let dir = fixtures().join(case);
    assert!(
        dir.join("io.safetensors").is_file() && dir.join("config.json").is_file(),
        "fixture {} is missing: run `cargo xtask py scripts/gen_unet_fixtures.py`",
        dir.display()
    );
    dir
}

/// Inputs and expected output of a case.
pub fn case_io(case: &str) -> BTreeMap<String, Tensor> {
    tensor::safetensors::load(case_dir(case).join("io.safetensors"), Device::Cpu).unwrap()
}

/// `||a - b|| / ||b||` in f64.
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(tch::Kind::Double);
    let b = b.to_kind(tch::Kind::Double);
    (&a - &b).norm().double_value(&[]) / b.norm().double_value(&[])
}
