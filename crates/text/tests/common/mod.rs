//! Helpers shared by the integration tests of `text`.
#![allow(dead_code)]

use std::path::PathBuf;

use tch::{Device, Tensor};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The reference tensors of a tiny model (`sd1-tiny`, `sd2-tiny`).
pub fn references(case: &str) -> std::collections::BTreeMap<String, Tensor> {
    let path = fixtures().join(format!("{case}.safetensors"));
    assert!(
        path.is_file(),
        "fixture {} is missing: run `cargo xtask py scripts/gen_text_fixtures.py`",
        path.display()
    );
    tensor::safetensors::load(path, Device::Cpu).unwrap()
}

/// `max |a - b| / max |b|` in f64: the error relative to the scale of the
/// reference.
pub fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(tch::Kind::Double).to_device(Device::Cpu);
    let b = b.to_kind(tch::Kind::Double);
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}
