//! Hostile bytes into the scheduler config loader
//! (`scheduler_config.json`: `SchedulerConfig::load`) and the schedule it
//! describes (`Schedule::from_config`): errors, never a panic, an abort or
//! an allocation sized by a number in the file. `LMZH_FUZZ_CASES` sets the
//! number of inputs (see `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use schedule::{Schedule, SchedulerConfig};

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

fn seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut seeds = vec![
        SchedulerConfig::ddpm().to_json_string().into_bytes(),
        std::fs::read(root.join("assets/models/digits/scheduler/scheduler_config.json")).unwrap(),
        br#"{"num_train_timesteps": 4, "trained_betas": [0.1, 0.2, 0.3, 0.4], "rescale_betas_zero_snr": true}"#.to_vec(),
        br#"{"beta_schedule": "squaredcos_cap_v2", "beta_start": -Infinity, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}"#.to_vec(),
    ];
    // Every scheduler config of the sampler's parity cases.
    let cases = std::fs::read_to_string(root.join("crates/sampler/tests/fixtures/cases.json"));
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&cases.unwrap_or_default()) {
        for case in v["cases"].as_array().into_iter().flatten() {
            seeds.push(case["config"].to_string().into_bytes());
        }
    }
    seeds
}

#[test]
fn scheduler_config_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("scheduler_config.json");
    harness::fuzz("scheduler-config", &seeds(), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(config) = SchedulerConfig::load(&path) else {
            return false;
        };
        let text = config.to_json_string();
        assert!(SchedulerConfig::from_json_str(&text).is_ok(), "{text}");
        let Ok(schedule) = Schedule::from_config(&config) else {
            return false;
        };
        let n = schedule.num_train_timesteps();
        let _ = (schedule.alpha_bar(n - 1), schedule.row(0), schedule.snr());
        true
    });
}
