//! Beta schedules: the variance beta_t of the noise added at each of the
//! `T` training steps, computed in f64 exactly as diffusers defines them
//! (`DDPMScheduler.__init__`, `betas_for_alpha_bar`,
//! `rescale_zero_terminal_snr`), so a model trained with diffusers sees the
//! same noise levels here.
//!
//! - `linear` (Ho et al. 2020): beta rises linearly from `beta_start` to
//!   `beta_end`.
//! - `scaled_linear` (latent diffusion): sqrt(beta) rises linearly.
//! - `squaredcos_cap_v2` (Nichol & Dhariwal 2021, "cosine"): alpha_bar(t)
//!   follows cos²((t/T + s) / (1 + s) · π/2) with s = 0.008, each beta capped
//!   at 0.999; `beta_start` and `beta_end` are ignored. Unlike diffusers-rs
//!   and candle, whose `betas_for_alpha_bar` divides integers and returns
//!   zeros, this is the real cosine schedule.
//! - `sigmoid` (GeoDiff): beta follows a logistic curve over [-6, 6] between
//!   `beta_start` and `beta_end`.
//! - [`rescale_zero_terminal_snr`] (Lin et al. 2023): shifts and scales
//!   sqrt(alpha_bar) so the last step is pure noise (alpha_bar = 0, beta = 1,
//!   SNR = 0) while the first keeps its value.

use crate::{Error, Result};

string_enum! {
    /// How the betas are laid out over the training steps (diffusers'
    /// `beta_schedule`). `cosine` is accepted as another name for
    /// `squaredcos_cap_v2`.
    pub enum BetaSchedule as "beta_schedule" {
        /// Linear in beta (DDPM).
        Linear = "linear",
        /// Linear in sqrt(beta) (Stable Diffusion).
        ScaledLinear = "scaled_linear",
        /// The cosine alpha_bar of improved DDPM, betas capped at 0.999.
        SquaredcosCapV2 = "squaredcos_cap_v2" | "cosine",
        /// A logistic curve between beta_start and beta_end (GeoDiff).
        Sigmoid = "sigmoid",
    }
}

impl Default for BetaSchedule {
    /// `linear`, diffusers' default.
    fn default() -> Self {
        BetaSchedule::Linear
    }
}

impl BetaSchedule {
    /// Whether `beta_start` and `beta_end` shape this schedule (the cosine
    /// schedule ignores them).
    pub fn uses_beta_range(self) -> bool {
        !matches!(self, BetaSchedule::SquaredcosCapV2)
    }
}

/// The offset s of the cosine schedule, which keeps beta_0 from being
/// vanishingly small (Nichol & Dhariwal 2021, eq. 17).
pub const COSINE_S: f64 = 0.008;

/// The cap on every cosine beta, which keeps the last steps from being
/// singular.
pub const COSINE_MAX_BETA: f64 = 0.999;

/// The betas of `schedule` over `num_train_timesteps` steps. `beta_start`
/// and `beta_end` must lie in (0, 1) for the schedules that use them.
pub fn compute(
    schedule: BetaSchedule,
    num_train_timesteps: usize,
    beta_start: f64,
    beta_end: f64,
) -> Result<Vec<f64>> {
    check_len(num_train_timesteps)?;
    if schedule.uses_beta_range() {
        for (field, value) in [("beta_start", beta_start), ("beta_end", beta_end)] {
            if !(value > 0.0 && value < 1.0) {
                return Err(Error::BetaParameter { field, value });
            }
        }
    }
    let n = num_train_timesteps;
    Ok(match schedule {
        BetaSchedule::Linear => linspace(beta_start, beta_end, n),
        BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), n)
            .into_iter()
            .map(|b| b * b)
            .collect(),
        BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(n, COSINE_MAX_BETA, cosine_alpha_bar),
        BetaSchedule::Sigmoid => linspace(-6.0, 6.0, n)
            .into_iter()
            .map(|x| sigmoid(x) * (beta_end - beta_start) + beta_start)
            .collect(),
    })
}

/// The cosine schedule's alpha_bar at continuous time `t` in [0, 1]
/// (unnormalised: the betas only use ratios of it).
pub fn cosine_alpha_bar(t: f64) -> f64 {
    ((t + COSINE_S) / (1.0 + COSINE_S) * std::f64::consts::FRAC_PI_2)
        .cos()
        .powi(2)
}

/// Betas that discretise a continuous alpha_bar(t), t in [0, 1]:
/// beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta).
/// The divisions are in floating point (diffusers-rs and candle divide
/// integers here and get zeros).
pub fn betas_for_alpha_bar(
    num_diffusion_timesteps: usize,
    max_beta: f64,
    alpha_bar: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let n = num_diffusion_timesteps as f64;
    (0..num_diffusion_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// Zero terminal SNR (Lin et al. 2023, Algorithm 1): sqrt(alpha_bar) is
/// shifted so its last value is 0 and scaled so its first is unchanged, and
/// the betas are recovered from it. The last beta becomes exactly 1.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut sqrt_ab: Vec<f64> = cumprod(betas.iter().map(|b| 1.0 - b))
        .into_iter()
        .map(f64::sqrt)
        .collect();
    let (Some(&first), Some(&last)) = (sqrt_ab.first(), sqrt_ab.last()) else {
        return Vec::new();
    };
    let scale = first / (first - last);
    for v in &mut sqrt_ab {
        *v = (*v - last) * scale;
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    out.extend(ab.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// Checks betas given directly (diffusers' `trained_betas`): at least two,
/// each finite and in [0, 1].
pub fn check_betas(betas: &[f64]) -> Result<()> {
    check_len(betas.len())?;
    match betas
        .iter()
        .enumerate()
        .find(|(_, b)| !(b.is_finite() && (0.0..=1.0).contains(*b)))
    {
        Some((index, &value)) => Err(Error::InvalidBeta { index, value }),
        None => Ok(()),
    }
}

/// The most training timesteps a schedule may have: a number from a config
/// file sizes every table of the schedule, so it is bounded.
pub const MAX_TIMESTEPS: usize = 100_000;

fn check_len(n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::TooFewTimesteps(n));
    }
    if n > MAX_TIMESTEPS {
        return Err(Error::TooManyTimesteps {
            n,
            max: MAX_TIMESTEPS,
        });
    }
    Ok(())
}

/// `torch.linspace(start, end, steps)` in f64, element for element: the
/// first half counts up from `start`, the second half down from `end`.
pub fn linspace(start: f64, end: f64, steps: usize) -> Vec<f64> {
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f64;
            let half = steps / 2;
            (0..steps)
                .map(|i| {
                    if i < half {
                        start + step * i as f64
                    } else {
                        end - step * (steps - i - 1) as f64
                    }
                })
                .collect()
        }
    }
}

/// Running products, left to right.
pub fn cumprod(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 1.0;
    values
        .into_iter()
        .map(|v| {
            acc *= v;
            acc
        })
        .collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_alias() {
        for s in BetaSchedule::ALL {
            assert_eq!(s.as_str().parse::<BetaSchedule>().unwrap(), *s);
        }
        assert_eq!(
            "cosine".parse::<BetaSchedule>().unwrap(),
            BetaSchedule::SquaredcosCapV2
        );
        let err = "cosin".parse::<BetaSchedule>().unwrap_err().to_string();
        assert!(
            err.contains("\"cosin\"")
                && err.contains("linear, scaled_linear, squaredcos_cap_v2 (alias cosine), sigmoid"),
            "{err}"
        );
    }

    #[test]
    fn linspace_hits_both_ends_exactly() {
        let v = linspace(1e-4, 0.02, 1000);
        assert_eq!((v[0], v[999]), (1e-4, 0.02));
        assert!(v.windows(2).all(|w| w[1] > w[0]));
        assert_eq!(linspace(-6.0, 6.0, 3), vec![-6.0, 0.0, 6.0]);
    }

    #[test]
    fn cosine_is_not_zero_and_is_capped() {
        // The integer-division bug elsewhere gives all zeros here.
        let b = compute(BetaSchedule::SquaredcosCapV2, 1000, 1e-4, 0.02).unwrap();
        assert!(b.iter().all(|&x| x > 0.0 && x <= COSINE_MAX_BETA));
        assert_eq!(b[999], COSINE_MAX_BETA);
        assert!((b[0] - 4.1284e-5).abs() < 1e-8, "{}", b[0]);
    }

    #[test]
    fn zero_snr_keeps_the_start_and_zeroes_the_end() {
        let b = compute(BetaSchedule::Linear, 1000, 1e-4, 0.02).unwrap();
        let r = rescale_zero_terminal_snr(&b);
        assert_eq!(r.len(), b.len());
        assert!((r[0] - b[0]).abs() < 1e-15);
        assert_eq!(r[999], 1.0);
        assert!(r[..999].iter().all(|&x| x > 0.0 && x < 1.0));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = compute(BetaSchedule::Linear, 1, 1e-4, 0.02).unwrap_err();
        assert!(e.to_string().contains("at least 2"), "{e}");
        // A count from a config file sizes the tables: bounded, not allocated.
        let e = compute(BetaSchedule::Linear, 1 << 40, 1e-4, 0.02).unwrap_err();
        assert!(e.to_string().contains("more than 100000 timesteps"), "{e}");
        let e = compute(BetaSchedule::Linear, 10, 1e-4, 1.5).unwrap_err();
        assert!(e.to_string().starts_with("beta_end = 1.5"), "{e}");
        // The cosine schedule ignores the range.
        compute(BetaSchedule::SquaredcosCapV2, 10, 0.0, 7.0).unwrap();
        let e = check_betas(&[0.1, f64::NAN]).unwrap_err();
        assert!(e.to_string().starts_with("beta[1] = NaN"), "{e}");
    }
}
