//! Invariants of every schedule, checked on random schedules, batches and
//! timesteps.
//!
//! - betas lie in (0, 1) and alphas_cumprod is strictly decreasing in
//!   (0, 1]. With zero terminal SNR (Lin et al. 2023) the last step is pure
//!   noise, as in diffusers: its beta is exactly 1 and its alpha_bar exactly
//!   0; every other step keeps the invariants.
//! - Every conversion between prediction types (epsilon, sample, v)
//!   round-trips to 1e-6 wherever it is defined (conversions from epsilon
//!   divide by sqrt(alpha_bar), which is 0 only at that last zero-SNR step),
//!   and converts the true value of one type into the true value of another.
//!   On extreme schedules (alpha_bar below ~1e-16) the bound grows as the
//!   conversions' own conditioning, 1e-14 / sqrt(alpha_bar).
//! - `add_noise` at alpha_bar = 1 returns x_0 exactly.

use proptest::prelude::*;
use schedule::{BetaSchedule, PredictionType, Schedule, SchedulerConfig};
use tch::{Device, Kind, Tensor};

fn any_schedule() -> impl Strategy<Value = BetaSchedule> {
    prop::sample::select(BetaSchedule::ALL.to_vec())
}

fn any_prediction() -> impl Strategy<Value = PredictionType> {
    prop::sample::select(PredictionType::ALL.to_vec())
}

/// A schedule with the parameter ranges people use: T up to 2000, betas up
/// to 0.05.
fn schedules() -> impl Strategy<Value = (SchedulerConfig, Schedule)> {
    (
        any_schedule(),
        2usize..=2000,
        1e-5f64..1e-2,
        1e-3f64..0.05,
        any::<bool>(),
    )
        .prop_map(|(kind, n, start, end, rescale)| {
            let config = SchedulerConfig {
                beta_schedule: Some(kind),
                num_train_timesteps: Some(n),
                beta_start: Some(start),
                beta_end: Some(end),
                rescale_betas_zero_snr: Some(rescale),
                ..Default::default()
            };
            let schedule = Schedule::from_config(&config).unwrap();
            (config, schedule)
        })
}

fn tensor(seed: u64, shape: &[i64]) -> Tensor {
    tch::manual_seed(seed as i64);
    Tensor::randn(shape, (Kind::Double, Device::Cpu))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Converts `from` -> `to` -> `from` on random tensors at the timesteps
/// `t_frac` · T plus the first and last, and converts true values of `from`
/// into `to`; returns both largest errors. Conversions from epsilon are
/// skipped where they are undefined (alpha_bar = 0).
fn conversion_errors(
    s: &Schedule,
    from: PredictionType,
    to: PredictionType,
    t_frac: &[f64],
    seed: u64,
) -> (f64, f64) {
    let n = s.num_train_timesteps();
    let mut ts: Vec<i64> = t_frac.iter().map(|f| (f * n as f64) as i64).collect();
    ts.push(0);
    ts.push(n as i64 - 1);
    let involves_epsilon = from == PredictionType::Epsilon || to == PredictionType::Epsilon;
    if involves_epsilon && from != to {
        ts.retain(|&t| s.alpha_bar(t as usize) > 0.0);
    }
    let shape = [ts.len() as i64, 2, 3, 3];
    let t = Tensor::from_slice(&ts);
    let x_t = tensor(seed, &shape);
    let out = tensor(seed.wrapping_add(1), &shape);
    let there = s.convert(&out, from, to, &x_t, &t).unwrap();
    let back = s.convert(&there, to, from, &x_t, &t).unwrap();
    let round_trip = max_abs(&back, &out);

    // A consistent (x_0, eps) pair: each type converts to the true other.
    let x0 = tensor(seed.wrapping_add(2), &shape);
    let eps = tensor(seed.wrapping_add(3), &shape);
    let xt = s.add_noise(&x0, &eps, &t).unwrap();
    let truth = |p: PredictionType| s.target(p, &x0, &eps, &t).unwrap();
    let got = s.convert(&truth(from), from, to, &xt, &t).unwrap();
    (round_trip, max_abs(&got, &truth(to)))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        // Shrunk failures are printed; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn betas_and_alpha_bar_are_well_formed((config, s) in schedules()) {
        let n = config.num_train_timesteps.unwrap();
        let betas = s.betas();
        let ab = s.alphas_cumprod();
        prop_assert_eq!(betas.len(), n);
        // The steps before the last are the same with or without zero SNR.
        let body = if config.rescale_betas_zero_snr.unwrap() { n - 1 } else { n };
        for t in 0..body {
            prop_assert!(betas[t] > 0.0 && betas[t] < 1.0, "beta[{}] = {}", t, betas[t]);
            prop_assert!(ab[t] > 0.0 && ab[t] <= 1.0, "alpha_bar[{}] = {}", t, ab[t]);
        }
        if config.rescale_betas_zero_snr.unwrap() {
            prop_assert_eq!(betas[n - 1], 1.0);
            prop_assert_eq!(ab[n - 1], 0.0);
            prop_assert_eq!(s.snr()[n - 1], 0.0);
        }
        for t in 1..n {
            prop_assert!(ab[t] < ab[t - 1], "alpha_bar not decreasing at {}", t);
            prop_assert!(s.log_snr()[t] < s.log_snr()[t - 1]);
        }
    }

    #[test]
    fn prediction_conversions_round_trip_on_standard_schedules(
        kind in any_schedule(),
        n in 2usize..=1000,
        rescale in any::<bool>(),
        from in any_prediction(),
        to in any_prediction(),
        t_frac in prop::collection::vec(0.0f64..1.0, 1..5),
        seed in any::<u64>(),
    ) {
        // diffusers' default betas (1e-4 to 0.02): strictly 1e-6.
        let config = SchedulerConfig {
            beta_schedule: Some(kind),
            num_train_timesteps: Some(n),
            rescale_betas_zero_snr: Some(rescale),
            ..Default::default()
        };
        let s = Schedule::from_config(&config).unwrap();
        let (round_trip, truth) = conversion_errors(&s, from, to, &t_frac, seed);
        prop_assert!(round_trip <= 1e-6, "{} -> {} -> {}: {:e}", from, to, from, round_trip);
        prop_assert!(truth <= 1e-6, "{} -> {}: {:e}", from, to, truth);
    }

    #[test]
    fn prediction_conversions_round_trip_on_any_schedule(
        (_config, s) in schedules(),
        from in any_prediction(),
        to in any_prediction(),
        t_frac in prop::collection::vec(0.0f64..1.0, 1..5),
        seed in any::<u64>(),
    ) {
        // Recovering x_0 from (x_t, eps) divides a difference of O(1) values
        // by sqrt(alpha_bar) (and eps from x_0 by sqrt(1 - alpha_bar)), so
        // where alpha_bar falls below ~1e-16 (T = 2000 with betas near 0.05)
        // the f64 rounding of x_t is amplified as much.
        let (round_trip, truth) = conversion_errors(&s, from, to, &t_frac, seed);
        let worst = s
            .alphas_cumprod()
            .iter()
            .filter(|&&ab| ab > 0.0)
            .map(|&ab| ab.sqrt().min((1.0 - ab).sqrt()))
            .fold(1.0, f64::min);
        let tol = 1e-6f64.max(1e-14 / worst);
        prop_assert!(round_trip <= tol, "{} -> {} -> {}: {:e} > {:e}", from, to, from, round_trip, tol);
        prop_assert!(truth <= tol, "{} -> {}: {:e} > {:e}", from, to, truth, tol);
    }

    #[test]
    fn add_noise_at_alpha_bar_one_is_the_identity(
        rest in prop::collection::vec(1e-4f64..0.5, 1..50),
        seed in any::<u64>(),
        kind in prop::sample::select(vec![Kind::Float, Kind::Double, Kind::BFloat16]),
        batch in 1i64..5,
    ) {
        // A first beta of 0 means alpha_bar_0 = 1: no noise at all.
        let mut betas = vec![0.0];
        betas.extend(rest);
        let s = Schedule::from_betas(betas).unwrap();
        prop_assert_eq!(s.alpha_bar(0), 1.0);
        let x0 = tensor(seed, &[batch, 3, 4]).to_kind(kind);
        let noise = tensor(seed.wrapping_add(1), &[batch, 3, 4]).to_kind(kind);
        let t = Tensor::zeros([batch], (Kind::Int64, Device::Cpu));
        let xt = s.add_noise(&x0, &noise, &t).unwrap();
        prop_assert_eq!(xt.kind(), kind);
        prop_assert!(xt.equal(&x0), "add_noise changed x0 at alpha_bar = 1");
        // And there v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 = eps.
        let v = s.velocity(&x0, &noise, &t).unwrap();
        prop_assert!(v.equal(&noise));
    }

    #[test]
    fn add_noise_matches_the_formula_per_sample(
        (config, s) in schedules(),
        t_frac in prop::collection::vec(0.0f64..1.0, 1..6),
        seed in any::<u64>(),
    ) {
        let n = config.num_train_timesteps.unwrap();
        let ts: Vec<i64> = t_frac.iter().map(|f| (f * n as f64) as i64).collect();
        let t = Tensor::from_slice(&ts);
        let shape = [ts.len() as i64, 4];
        let x0 = tensor(seed, &shape);
        let eps = tensor(seed.wrapping_add(1), &shape);
        let xt = s.add_noise(&x0, &eps, &t).unwrap();
        for (i, &ti) in ts.iter().enumerate() {
            let ab = s.alpha_bar(ti as usize);
            for j in 0..4 {
                let want = ab.sqrt() * x0.double_value(&[i as i64, j])
                    + (1.0 - ab).sqrt() * eps.double_value(&[i as i64, j]);
                let got = xt.double_value(&[i as i64, j]);
                prop_assert!((got - want).abs() <= 1e-12, "t={}: {} vs {}", ti, got, want);
            }
        }
    }
}
