//! Parity with diffusers' `UNet2DModel` on the reference fixtures of
//! `scripts/gen_unet_fixtures.py`: same forward output (float32, relative L2
//! error <= 1e-4 on the CPU, <= 1e-2 on CUDA; `LMZH_TEST_DEVICE=cuda` runs
//! it there, as `cargo xtask gpu-check` does), same state-dict names and
//! shapes, same parameter counts and FLOPs for the presets.

mod common;

use common::{case_dir, case_io, fixtures, rel_l2, test_device, tolerance, CASES};
use serde_json::Value;
use tch::{Device, Tensor};
use unet::{UNet, UNetConfig};

/// The case's output on the model's device (inputs moved there), and the
/// expected output (CPU).
fn run_case(unet: &UNet, case: &str) -> (Tensor, Tensor) {
    let io = case_io(case);
    let device = unet.vs.device();
    let on = |name: &str| io.get(name).map(|t| t.to_device(device));
    let out = tch::no_grad(|| {
        unet.forward(
            &on("sample").unwrap(),
            &on("timesteps").unwrap(),
            on("class_labels").as_ref(),
        )
    })
    .unwrap_or_else(|e| panic!("{case}: {e}"));
    (out.to_device(Device::Cpu), io["output"].shallow_clone())
}

#[test]
fn forward_matches_diffusers_on_every_case() {
    let device = test_device();
    let tol = tolerance(device);
    let mut report = Vec::new();
    for case in CASES {
        let unet = UNet::load(case_dir(case), device).unwrap_or_else(|e| panic!("{case}: {e}"));
        let (out, expected) = run_case(&unet, case);
        assert_eq!(out.size(), expected.size(), "{case}");
        let err = rel_l2(&out, &expected);
        println!("{case}: relative L2 error {err:.3e}");
        report.push((case, err));
    }
    let worst = report.iter().map(|r| r.1).fold(0.0, f64::max);
    println!("worst relative L2 error {worst:.3e} on {device:?} (tolerance {tol:e})");
    for (case, err) in report {
        assert!(
            err <= tol,
            "{case}: relative L2 error {err:.3e} > {tol:e} on {device:?}"
        );
    }
}

#[test]
fn a_pipeline_folder_loads_its_unet() {
    let case = "uncond_grey28";
    let tmp = tempfile::tempdir().unwrap();
    let unet_dir = tmp.path().join("unet");
    std::fs::create_dir_all(&unet_dir).unwrap();
    std::fs::create_dir_all(tmp.path().join("scheduler")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(case_dir(case).join(f), unet_dir.join(f)).unwrap();
    }
    std::fs::write(
        tmp.path().join("model_index.json"),
        r#"{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"]}"#,
    )
    .unwrap();
    let unet = UNet::load(tmp.path(), Device::Cpu).unwrap();
    let (out, expected) = run_case(&unet, case);
    assert!(rel_l2(&out, &expected) <= tolerance(Device::Cpu));

    std::fs::remove_dir_all(&unet_dir).unwrap();
    let err = UNet::load(tmp.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("unet/config.json"), "{err}");
}

#[test]
fn weight_mismatches_are_listed_in_full() {
    let case = "uncond_grey28";
    let dir = case_dir(case);
    let mut weights =
        tensor::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), Device::Cpu)
            .unwrap();
    let _ = weights.remove("conv_in.bias").unwrap();
    let _ = weights
        .remove("mid_block.attentions.0.to_k.weight")
        .unwrap();
    weights.insert(
        "extra.weight".into(),
        Tensor::zeros([2], (tch::Kind::Float, Device::Cpu)),
    );
    weights.insert(
        "conv_out.weight".into(),
        Tensor::zeros([1, 8, 1, 1], (tch::Kind::Float, Device::Cpu)),
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tensor::safetensors::save(
        tmp.path().join("diffusion_pytorch_model.safetensors"),
        &refs,
        None,
    )
    .unwrap();
    let err = UNet::load(tmp.path(), Device::Cpu).unwrap_err().to_string();
    for name in [
        "conv_in.bias",
        "mid_block.attentions.0.to_k.weight",
        "extra.weight",
        "conv_out.weight",
        "diffusion_pytorch_model.safetensors",
    ] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
}

#[test]
fn legacy_attention_names_load() {
    let case = "uncond_grey28";
    let dir = case_dir(case);
    let weights =
        tensor::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), Device::Cpu)
            .unwrap();
    let renamed: Vec<(String, Tensor)> = weights
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace(".to_q.", ".query.")
                .replace(".to_k.", ".key.")
                .replace(".to_v.", ".value.")
                .replace(".to_out.0.", ".proj_attn.");
            (k, v)
        })
        .collect();
    assert!(renamed
        .iter()
        .any(|(k, _)| k.ends_with("attentions.0.proj_attn.weight")));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("config.json"), tmp.path().join("config.json")).unwrap();
    let refs: Vec<(&str, &Tensor)> = renamed.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tensor::safetensors::save(
        tmp.path().join("diffusion_pytorch_model.safetensors"),
        &refs,
        None,
    )
    .unwrap();
    let unet = UNet::load(tmp.path(), Device::Cpu).unwrap();
    let (out, expected) = run_case(&unet, case);
    assert!(rel_l2(&out, &expected) <= tolerance(Device::Cpu));
}

fn presets() -> serde_json::Map<String, Value> {
    let path = fixtures().join("presets.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run `cargo xtask py scripts/gen_unet_fixtures.py`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// JSON values equal, numbers compared as numbers (`1` == `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

#[test]
fn presets_match_diffusers_names_shapes_counts_and_flops() {
    let presets = presets();
    for name in ["ddpm-cifar10", "small-grey-28", "tiny"] {
        let reference = &presets[name];
        let config = UNetConfig::preset(name).unwrap();
        let ours: Value = serde_json::from_str(&config.to_diffusers_json()).unwrap();
        for (key, value) in reference["config"].as_object().unwrap() {
            assert!(
                same(&ours[key], value),
                "{name}: {key} = {} vs {value}",
                ours[key]
            );
        }
        let unet = tch::no_grad(|| UNet::new(&config, Device::Cpu)).unwrap();
        let shapes: std::collections::BTreeMap<String, Vec<i64>> = unet
            .state_dict()
            .into_iter()
            .map(|(k, v)| (k, v.size()))
            .collect();
        let expected: std::collections::BTreeMap<String, Vec<i64>> =
            serde_json::from_value(reference["shapes"].clone()).unwrap();
        assert_eq!(shapes, expected, "{name}: state-dict names and shapes");
        assert_eq!(
            unet.num_parameters(),
            reference["num_parameters"].as_i64().unwrap(),
            "{name}"
        );
        let (h, w) = config.sample_hw().unwrap();
        let flops = unet.model.flops(h, w).unwrap();
        let total: u64 = flops.iter().map(|(_, f)| f).sum();
        assert_eq!(
            total,
            reference["total_flops"].as_u64().unwrap(),
            "{name}: total FLOPs"
        );
        for (block, f) in &flops {
            let r = reference["flops"][block].as_u64().unwrap_or(0);
            assert_eq!(*f, r, "{name}: FLOPs of {block}");
        }
    }
}

/// On a CUDA machine the same weights give the same outputs (TF32 and
/// the fused attention kernels allow a looser tolerance); skipped elsewhere.
#[test]
fn forward_on_cuda_matches_when_available() {
    if !tch::Cuda::is_available() {
        println!("CUDA not available: skipped");
        return;
    }
    for case in CASES {
        let unet = UNet::load(case_dir(case), Device::Cuda(0)).unwrap();
        let (out, expected) = run_case(&unet, case);
        let err = rel_l2(&out, &expected);
        let tol = tolerance(Device::Cuda(0));
        println!("{case} on cuda:0: relative L2 error {err:.3e}");
        assert!(err <= tol, "{case}: relative L2 error {err:.3e} on CUDA");
    }
}
