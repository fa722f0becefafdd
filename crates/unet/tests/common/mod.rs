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

/// The crate folder: `CARGO_MANIFEST_DIR` as `cargo test` (or `cargo xtask
/// gpu-check --prebuilt`, running a test binary built elsewhere) sets it at
/// run time, else where this binary was built.
pub fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixtures() -> PathBuf {
    crate_dir().join("tests/fixtures")
}

/// The device of the parity tests: `LMZH_TEST_DEVICE` (`cpu`, `cuda`,
/// `cuda:N`, `auto`; default `cpu`). CUDA asked for where there is none is
/// a failure, not a skip.
pub fn test_device() -> Device {
    let spec = std::env::var("LMZH_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = spec
        .parse::<tensor::device::DeviceSpec>()
        .and_then(|d| d.resolve())
        .unwrap_or_else(|e| panic!("LMZH_TEST_DEVICE={spec:?}: {e}"));
    println!("parity device: {device:?} (LMZH_TEST_DEVICE={spec:?})");
    device
}

/// The forward pass's relative L2 tolerance against diffusers on `device`:
/// 1e-4 on the CPU (float32, the kernels PyTorch's CPU build uses), 1e-2 on
/// CUDA (cuDNN convolutions in TF32 and fused attention kernels).
pub fn tolerance(device: Device) -> f64 {
    if device.is_cuda() {
        1e-2
    } else {
        1e-4
    }
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
