//! Parity with diffusers 0.42.1: the betas and alphas_cumprod of every beta
//! schedule, with and without zero terminal SNR, at 1000 and 50 training
//! steps, against f64 references computed the way diffusers computes them.
//!
//! Fixtures: `cargo xtask py scripts/gen_schedule_fixtures.py`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use schedule::{BetaSchedule, Schedule, SchedulerConfig};
use serde::Deserialize;

/// The largest absolute difference allowed, in f64.
const TOLERANCE: f64 = 1e-7;

#[derive(Debug, Deserialize)]
struct Fixtures {
    diffusers: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
struct Case {
    beta_schedule: BetaSchedule,
    beta_start: f64,
    beta_end: f64,
    num_train_timesteps: usize,
    rescale_betas_zero_snr: bool,
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schedules.json")
}

fn load() -> Fixtures {
    let path = fixture_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate it with `cargo xtask py scripts/gen_schedule_fixtures.py`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() })
        .fold(0.0, f64::max)
}

#[test]
fn every_schedule_matches_diffusers() {
    let fixtures = load();
    assert_eq!(fixtures.diffusers, "0.42.1");
    let mut covered = BTreeSet::new();
    let (mut worst_betas, mut worst_ab) = (0.0f64, 0.0f64);
    for case in &fixtures.cases {
        let config = SchedulerConfig {
            num_train_timesteps: Some(case.num_train_timesteps),
            beta_start: Some(case.beta_start),
            beta_end: Some(case.beta_end),
            beta_schedule: Some(case.beta_schedule),
            rescale_betas_zero_snr: Some(case.rescale_betas_zero_snr),
            ..Default::default()
        };
        let s = Schedule::from_config(&config).unwrap();
        let eb = max_abs_diff(s.betas(), &case.betas);
        let ea = max_abs_diff(s.alphas_cumprod(), &case.alphas_cumprod);
        println!(
            "{:>17} zero_snr={:<5} T={:<4} max |betas - ref| = {eb:.3e}, max |alphas_cumprod - ref| = {ea:.3e}",
            case.beta_schedule.as_str(),
            case.rescale_betas_zero_snr,
            case.num_train_timesteps
        );
        assert!(
            eb <= TOLERANCE && ea <= TOLERANCE,
            "{} zero_snr={} T={}: betas {eb:e}, alphas_cumprod {ea:e}",
            case.beta_schedule,
            case.rescale_betas_zero_snr,
            case.num_train_timesteps
        );
        worst_betas = worst_betas.max(eb);
        worst_ab = worst_ab.max(ea);
        covered.insert((
            case.beta_schedule.as_str(),
            case.rescale_betas_zero_snr,
            case.num_train_timesteps,
        ));
    }
    println!("worst: betas {worst_betas:.3e}, alphas_cumprod {worst_ab:.3e}");
    // The fixture must hold every schedule, both ways, at both lengths.
    for s in BetaSchedule::ALL {
        for rescale in [false, true] {
            for n in [1000, 50] {
                assert!(
                    covered.contains(&(s.as_str(), rescale, n)),
                    "fixture lacks {s} zero_snr={rescale} T={n}"
                );
            }
        }
    }
}

#[test]
fn cosine_is_the_real_cosine() {
    // Spot values: the discretised cos² alpha_bar, not the zeros that an
    // integer division gives.
    let fixtures = load();
    let case = fixtures
        .cases
        .iter()
        .find(|c| {
            c.beta_schedule == BetaSchedule::SquaredcosCapV2
                && !c.rescale_betas_zero_snr
                && c.num_train_timesteps == 1000
        })
        .expect("cosine case");
    assert!(case.betas.iter().all(|&b| b > 0.0));
    let s = Schedule::new(BetaSchedule::SquaredcosCapV2, 1000, 1e-4, 0.02).unwrap();
    let f = |t: f64| schedule::betas::cosine_alpha_bar(t) / schedule::betas::cosine_alpha_bar(0.0);
    for t in [0usize, 250, 500, 750] {
        let want = f((t + 1) as f64 / 1000.0);
        assert!((s.alpha_bar(t) - want).abs() < 1e-12, "t={t}");
    }
}
