//! Hostile bytes into the trainer's loaders: TOML configs
//! (`TrainConfig::load`, `validate`, `set`) and checkpoints
//! (`checkpoint::load`, then the config saved in it, as a resume reads
//! them). Errors naming the file or key, never a panic or an abort.
//! `LMZH_FUZZ_CASES` sets the number of inputs (see
//! `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use std::collections::BTreeMap;

use data_pipeline::loader::Position;
use tch::{Device, Kind, Tensor};
use trainer::checkpoint::{self, Snapshot};
use trainer::TrainConfig;

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

fn config_seeds() -> Vec<Vec<u8>> {
    TrainConfig::PRESETS
        .iter()
        .map(|p| TrainConfig::preset(p).unwrap().to_toml().into_bytes())
        .collect()
}

#[test]
fn toml_config_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("train.toml");
    harness::fuzz("train-config", &config_seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(mut config) = TrainConfig::load(&path) else {
            return false;
        };
        let text = config.to_toml();
        assert!(toml::from_str::<TrainConfig>(&text).is_ok(), "{text}");
        let _ = config.set("optim.learning_rate=1e-3");
        config.validate().is_ok()
    });
}

fn checkpoint_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let f = (Kind::Float, Device::Cpu);
    let model = vec![
        ("conv_in.weight".to_string(), Tensor::ones([2, 1, 3, 3], f)),
        ("conv_in.bias".to_string(), Tensor::zeros([2], f)),
    ];
    let optim = BTreeMap::from([("exp_avg.conv_in.bias".to_string(), Tensor::zeros([2], f))]);
    TrainConfig::PRESETS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let toml = TrainConfig::preset(p).unwrap().to_toml();
            let path = dir.path().join(format!("step-{i}.safetensors"));
            let snapshot = Snapshot {
                step: 12 + i as u64,
                optim_step: 12,
                position: Position { epoch: 1, index: 3 },
                skipped_steps: 0,
                config_toml: &toml,
                model: &model,
                ema: &model[..1],
                optim: &optim,
            };
            checkpoint::save(&path, &snapshot).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect()
}

#[test]
fn checkpoint_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("step-000012.safetensors");
    harness::fuzz("checkpoint", &checkpoint_seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(ck) = checkpoint::load(&path, Device::Cpu) else {
            return false;
        };
        for t in ck
            .model
            .values()
            .chain(ck.ema.values())
            .chain(ck.optim.values())
        {
            let _ = t.f_sum(Kind::Double);
        }
        match toml::from_str::<TrainConfig>(&ck.config_toml) {
            Ok(config) => config.validate().is_ok(),
            Err(_) => false,
        }
    });
}
