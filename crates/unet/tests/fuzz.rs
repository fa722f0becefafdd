//! Hostile bytes into the U-Nets' `config.json` loaders and their checks
//! (`UNetConfig` and `UNetConditionConfig`: `from_file`, `validate`, the
//! derived sizes), then, for a valid config of a small model, the model it
//! describes: errors naming the key, never a panic or an abort.
//! `LMZH_FUZZ_CASES` sets the number of inputs (see
//! `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use tch::Device;
use unet::{ConditionUNet, UNet, UNetConditionConfig, UNetConfig};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

/// Valid configs whose models are at most this big (a lower bound, see
/// `min_parameters`) are built, to check that what `validate` accepts
/// builds and that the bound the loaders use is one.
const BUILD_AT_MOST: u128 = 100_000;

fn seeds() -> Vec<Vec<u8>> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seeds: Vec<Vec<u8>> = UNetConfig::PRESETS
        .iter()
        .map(|p| {
            UNetConfig::preset(p)
                .unwrap()
                .to_diffusers_json()
                .into_bytes()
        })
        .collect();
    for entry in std::fs::read_dir(&fixtures).unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("config.json")) {
            seeds.push(bytes);
        }
    }
    seeds
}

#[test]
fn unet_config_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("config.json");
    harness::fuzz("unet-config", &seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(config) = UNetConfig::from_file(&path) else {
            return false;
        };
        let _ = config.to_diffusers_json();
        if config.validate().is_err() {
            return false;
        }
        let _ = config.time_embed_dim();
        let _ = config.num_downsamples();
        for &c in &config.block_out_channels {
            let _ = config.attention_heads(c);
        }
        let _ = config.check_sample_hw(32, 32);
        let (h, w) = config.sample_hw().unwrap_or((28, 28));
        let _ = config.check_sample_hw(h, w);
        let min = config.min_parameters();
        if min <= BUILD_AT_MOST {
            let unet = UNet::new(&config, Device::Cpu).expect("a validated config builds");
            let n = unet.num_parameters() as u128;
            assert!(min <= n, "min_parameters {min} > {n} parameters");
        }
        true
    });
}

fn condition_seeds() -> Vec<Vec<u8>> {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/condition");
    let mut seeds = vec![
        UNetConditionConfig::stable_diffusion_v1()
            .to_diffusers_json()
            .into_bytes(),
        // Stable Diffusion 2.1's published keys
        br#"{"_class_name": "UNet2DConditionModel", "act_fn": "silu",
            "attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
            "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"], "dual_cross_attention": false,
            "freq_shift": 0, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": 32, "num_class_embeds": null, "only_cross_attention": false,
            "sample_size": 96, "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], "upcast_attention": true,
            "use_linear_projection": true}"#
            .to_vec(),
        // per-block lists, a class table, odd kernels, no mid block
        br#"{"block_out_channels": [8, 16], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "norm_num_groups": 4,
            "layers_per_block": [1, 2], "transformer_layers_per_block": [2, 1],
            "attention_head_dim": [2, 4], "cross_attention_dim": [6, 6],
            "only_cross_attention": [true, false], "num_class_embeds": 3,
            "resnet_time_scale_shift": "scale_shift", "conv_in_kernel": 1, "conv_out_kernel": 5,
            "mid_block_type": null, "time_embedding_dim": 12, "sample_size": [8, 12]}"#
            .to_vec(),
    ];
    for entry in std::fs::read_dir(&fixtures).unwrap().flatten() {
        if let Ok(bytes) = std::fs::read(entry.path().join("config.json")) {
            seeds.push(bytes);
        }
    }
    seeds
}

#[test]
fn unet_condition_config_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("config.json");
    harness::fuzz("unet-condition-config", &condition_seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(config) = UNetConditionConfig::from_file(&path) else {
            return false;
        };
        let text = config.to_diffusers_json();
        std::fs::write(&path, &text).unwrap();
        assert!(UNetConditionConfig::from_file(&path).is_ok(), "{text}");
        // Everything public that reads the config, valid or not.
        let _ = (config.levels(), config.up_cross_attention());
        let _ = (config.time_embed_dim(), config.encoder_width());
        let _ = (config.sample_hw(), config.mid_only_cross_attention());
        let _ = (config.activation(), config.class_embedding());
        let min = config.min_parameters();
        if config.validate().is_err() {
            return false;
        }
        if min <= BUILD_AT_MOST {
            let unet = ConditionUNet::new(&config, Device::Cpu).expect("a validated config builds");
            let n = unet.num_parameters() as u128;
            assert!(min <= n, "min_parameters {min} > {n} parameters");
        }
        true
    });
}
