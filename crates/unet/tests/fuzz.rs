//! Hostile bytes into the U-Net's `config.json` loader and its checks
//! (`UNetConfig::from_file`, `validate`, the derived sizes): errors naming
//! the key, never a panic or an abort. `LMZH_FUZZ_CASES` sets the number of
//! inputs (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use unet::UNetConfig;

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

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
        true
    });
}
