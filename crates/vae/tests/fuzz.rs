//! Hostile bytes into the VAE's `config.json` loader and its checks
//! (`VaeConfig::from_file`, `validate`, the derived sizes, the tiling),
//! then, for a valid config of a small model, the model it describes:
//! errors naming the key, never a panic or an abort. `LMZH_FUZZ_CASES` sets
//! the number of inputs (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use tch::Device;
use vae::{Tiling, Vae, VaeConfig};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

/// Valid configs whose models are at most this big (a lower bound, see
/// `VaeConfig::min_parameters`) are built, to check that what `validate`
/// accepts builds.
const BUILD_AT_MOST: u128 = 100_000;

fn seeds() -> Vec<Vec<u8>> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seeds = vec![
        VaeConfig::stable_diffusion().to_diffusers_json().into_bytes(),
        VaeConfig::default().to_diffusers_json().into_bytes(),
        // SD3-style latent statistics and shift, no quant convs
        br#"{"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "norm_num_groups": 4,
            "latent_channels": 2, "sample_size": [8, 16], "shift_factor": 0.0609,
            "latents_mean": [0.5, -0.5], "latents_std": [2, 0.25], "use_quant_conv": false,
            "use_post_quant_conv": false, "mid_block_add_attention": false, "act_fn": "gelu"}"#
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
fn vae_config_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("config.json");
    harness::fuzz("vae-config", &seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(config) = VaeConfig::from_file(&path) else {
            return false;
        };
        let text = config.to_diffusers_json();
        std::fs::write(&path, &text).unwrap();
        assert!(VaeConfig::from_file(&path).is_ok(), "{text}");
        // Everything public that reads the config, valid or not.
        let _ = config.activation();
        let _ = config.check_image_hw(64, 64);
        let _ = Tiling::for_config(&config);
        let min = config.min_parameters();
        if config.validate().is_err() {
            return false;
        }
        let (h, w) = config.sample_size.hw();
        let _ = config.check_image_hw(h, w);
        if min <= BUILD_AT_MOST {
            let vae = Vae::new(&config, Device::Cpu).expect("a validated config builds");
            let n = vae.num_parameters() as u128;
            assert!(min <= n, "min_parameters {min} > {n} parameters");
        }
        true
    });
}
