//! diffusers' `scheduler_config.json` files, as `save_config` writes them
//! (fixtures from `cargo xtask py scripts/gen_schedule_fixtures.py`), load
//! into `SchedulerConfig` and are written back unchanged.

use std::path::{Path, PathBuf};

use schedule::{
    BetaSchedule, PredictionType, Schedule, SchedulerConfig, TimestepSpacing, VarianceType,
};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers_configs")
}

fn read(name: &str) -> (String, SchedulerConfig) {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate it with `cargo xtask py scripts/gen_schedule_fixtures.py`",
            path.display()
        )
    });
    let config = SchedulerConfig::load(&path).unwrap();
    (text, config)
}

/// Keys of a JSON object text, in order (strict JSON or Python's).
fn keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split_once("\":").map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn every_saved_config_round_trips_byte_for_byte() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).expect("diffusers_configs fixtures") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let (text, config) = read(&name);
        let out = config.to_json_string();
        assert_eq!(keys(&out), keys(&text), "{name}: keys differ");
        assert_eq!(out, text, "{name}: written back differently");
        // And through a file.
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("scheduler_config.json");
        config.save(&copy).unwrap();
        assert_eq!(SchedulerConfig::load(Path::new(&copy)).unwrap(), config);
        n += 1;
    }
    assert!(n >= 4, "expected the four diffusers configs, found {n}");
}

#[test]
fn ddpm_config_fields_are_read() {
    let (_, c) = read("ddpm_cosine_v.json");
    assert_eq!(c.extra["_class_name"], "DDPMScheduler");
    assert_eq!(c.extra["_diffusers_version"], "0.42.1");
    assert_eq!(c.beta_schedule, Some(BetaSchedule::SquaredcosCapV2));
    assert_eq!(c.prediction_type, Some(PredictionType::VPrediction));
    assert_eq!(c.timestep_spacing, Some(TimestepSpacing::Trailing));
    assert_eq!(c.variance_type, Some(Some(VarianceType::FixedSmall)));
    assert_eq!(
        (c.rescale_betas_zero_snr, c.clip_sample),
        (Some(true), Some(true))
    );
    let s = Schedule::from_config(&c).unwrap();
    assert_eq!(s.num_train_timesteps(), 1000);
    assert_eq!(s.alpha_bar(999), 0.0);

    let (_, d) = read("ddpm_default.json");
    let default = SchedulerConfig {
        extra: d.extra.clone(),
        ..SchedulerConfig::ddpm()
    };
    assert_eq!(d, default, "DDPMScheduler() defaults differ from ours");
}

#[test]
fn other_solvers_configs_keep_their_own_keys() {
    let (_, ddim) = read("ddim_sd.json");
    assert_eq!(ddim.beta_schedule, Some(BetaSchedule::ScaledLinear));
    assert_eq!(ddim.steps_offset, Some(1));
    assert_eq!(ddim.extra["set_alpha_to_one"], false);
    assert_eq!(ddim.variance_type, None);
    assert!(ddim.to_json_value().get("variance_type").is_none());

    let (text, dpm) = read("dpm_solver.json");
    assert!(text.contains("-Infinity"));
    assert_eq!(dpm.variance_type, Some(None));
    assert_eq!(dpm.extra_f64("lambda_min_clipped"), Some(f64::NEG_INFINITY));
    assert_eq!(dpm.extra["algorithm_type"], "dpmsolver++");
    assert_eq!(dpm.timestep_spacing, Some(TimestepSpacing::Linspace));
}
