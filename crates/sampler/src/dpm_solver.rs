//! DPM-Solver++ multistep (Lu et al. 2022), diffusers'
//! `DPMSolverMultistepScheduler` with `algorithm_type: dpmsolver++`.
//!
//! With alpha_t = 1 / sqrt(sigma² + 1), s_t = sigma alpha_t, the
//! half-log-SNR lambda = ln alpha_t - ln s_t and h = lambda_t - lambda_s,
//! the model output is turned into x̂_0 (then dynamically thresholded when
//! configured) and the step of order k uses the last k x̂_0:
//!
//! - order 1: x_t = (s_t / s_s) x_s - alpha_t (e^{-h} - 1) D0
//! - order 2: + the `midpoint` or `heun` correction on
//!   D1 = (x̂_0 - x̂_0,prev) / r0, r0 = h_prev / h;
//! - order 3: the third-order update with D1 and D2 from three outputs.
//!
//! The first steps use lower orders until enough outputs exist; with
//! `lower_order_final` the last steps drop to order 1 and 2 when there are
//! fewer than 15 of them, and the final step is order 1 when the final sigma
//! is 0 (`final_sigmas_type: zero`, the default) or with `euler_at_final`.
//!
//! Config keys (defaults are diffusers'): `num_train_timesteps`, `beta_*`,
//! `trained_betas`, `solver_order` (2), `prediction_type`, `thresholding`,
//! `dynamic_thresholding_ratio`, `sample_max_value`, `algorithm_type`
//! (`dpmsolver++`; `deis` reads as it, like diffusers), `solver_type`
//! (`midpoint`; `heun`), `lower_order_final` (true), `euler_at_final`
//! (false), `use_karras_sigmas`, `use_exponential_sigmas`,
//! `final_sigmas_type` (`zero`), `lambda_min_clipped` (-inf),
//! `variance_type` (learned variance channels are dropped by the sampling
//! loop), `timestep_spacing` (`linspace`), `steps_offset`,
//! `rescale_betas_zero_snr`. The SDE variants, `dpmsolver`, Lu lambdas,
//! beta and flow sigmas are not supported and say so.

use schedule::prediction::{predicted_x0, vp_coefficients, NoiseLevel};
use schedule::{BetaSchedule, PredictionType, SchedulerConfig, TimestepSpacing};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::extra::{set_bool, set_str, Extra};
use crate::noise::NoiseSource;
use crate::numpy::{f32r, interp, np_arange, np_linspace};
use crate::sigma::{
    exponential_sigmas, karras_sigmas, sigma_tables, sigma_to_t, FinalSigmas, SigmaSpacing,
};
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
use crate::tables::{check_steps, check_timesteps};
use crate::x0::X0Processing;

/// The second-order correction (diffusers' `solver_type`; `logrho`, `bh1`
/// and `bh2` read as `midpoint`, as diffusers reads them for DPM-Solver++).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SolverType {
    #[default]
    Midpoint,
    Heun,
}

/// DPM-Solver++'s options: its `DPMSolverMultistepScheduler` keys beyond
/// [`SchedulerConfig`]'s typed fields, with diffusers' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverOptions {
    /// The order of the updates, 1 to 3 (`solver_order`, default 2).
    pub solver_order: usize,
    /// The second-order correction (`solver_type`, default midpoint).
    pub solver_type: SolverType,
    /// Whether the last steps drop to order 1 and 2 when there are fewer
    /// than 15 steps (`lower_order_final`, default true).
    pub lower_order_final: bool,
    /// Whether the last step is order 1 (`euler_at_final`, default false).
    pub euler_at_final: bool,
    /// The noise level after the last step (`final_sigmas_type`).
    pub final_sigmas_type: FinalSigmas,
    /// Timesteps whose half-log-SNR lambda is below this are cut off
    /// (`lambda_min_clipped`, default -inf).
    pub lambda_min_clipped: f64,
    /// `use_karras_sigmas` / `use_exponential_sigmas`.
    pub sigma_spacing: SigmaSpacing,
}

impl Default for DpmSolverOptions {
    /// diffusers' defaults.
    fn default() -> Self {
        DpmSolverOptions {
            solver_order: 2,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmas::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            sigma_spacing: SigmaSpacing::Timesteps,
        }
    }
}

impl DpmSolverOptions {
    /// The options a scheduler config sets, diffusers' defaults for the
    /// keys it lacks; the variants this solver does not implement
    /// (`algorithm_type` other than `dpmsolver++`, Lu lambdas, flow sigmas,
    /// dynamic shifting) are errors.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        let solver_order = extra.usize("solver_order", 2)?;
        check_order(solver_order)?;
        extra.choice("algorithm_type", "dpmsolver++", &["dpmsolver++", "deis"])?;
        let solver_type = match extra
            .choice(
                "solver_type",
                "midpoint",
                &["midpoint", "heun", "logrho", "bh1", "bh2"],
            )?
            .as_str()
        {
            "heun" => SolverType::Heun,
            _ => SolverType::Midpoint,
        };
        for key in ["use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"] {
            if extra.bool(key, false)? {
                return Err(Error::config(key, "not supported"));
            }
        }
        Ok(DpmSolverOptions {
            solver_order,
            solver_type,
            lower_order_final: extra.bool("lower_order_final", true)?,
            euler_at_final: extra.bool("euler_at_final", false)?,
            final_sigmas_type: FinalSigmas::from_config(config)?,
            lambda_min_clipped: extra.f64("lambda_min_clipped", f64::NEG_INFINITY)?,
            sigma_spacing: SigmaSpacing::from_config(config)?,
        })
    }

    /// Writes the config keys of these options.
    pub fn write_to(&self, config: &mut SchedulerConfig) {
        config
            .extra
            .insert("solver_order".into(), self.solver_order.into());
        let solver_type = match self.solver_type {
            SolverType::Midpoint => "midpoint",
            SolverType::Heun => "heun",
        };
        set_str(config, "solver_type", solver_type);
        set_bool(config, "lower_order_final", self.lower_order_final);
        set_bool(config, "euler_at_final", self.euler_at_final);
        self.final_sigmas_type.write_to(config);
        config.set_extra_f64("lambda_min_clipped", self.lambda_min_clipped);
        self.sigma_spacing.write_to(config);
    }
}

fn check_order(order: usize) -> Result<()> {
    if !(1..=3).contains(&order) {
        return Err(Error::config(
            "solver_order",
            format!("{order}: expected 1, 2 or 3"),
        ));
    }
    Ok(())
}

/// diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++).
#[derive(Debug)]
pub struct DpmSolverMultistep {
    positions: Positions,
    /// One per timestep plus the final one.
    sigmas: Vec<f64>,
    prediction: PredictionType,
    x0: X0Processing,
    order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    /// The last `order` predicted x_0, oldest first.
    history: Vec<Tensor>,
    lower_order_nums: usize,
}

/// (alpha_t, s_t, lambda) of a noise level sigma.
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let (alpha, s) = vp_coefficients(sigma);
    (alpha, s, alpha.ln() - s.ln())
}

impl DpmSolverMultistep {
    /// DPM-Solver++ over `steps` steps as
    /// `DPMSolverMultistepScheduler.from_config(config)` with
    /// `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_options(config, steps, DpmSolverOptions::from_config(config)?)
    }

    /// DPM-Solver++ over `steps` steps with the schedule keys of `config`
    /// and the given options (the config's option keys are not read).
    pub fn with_options(
        config: &SchedulerConfig,
        steps: usize,
        options: DpmSolverOptions,
    ) -> Result<Self> {
        check_order(options.solver_order)?;
        let spacing_kind = options.sigma_spacing;
        let final_zero = options.final_sigmas_type == FinalSigmas::Zero;
        let lambda_min_clipped = options.lambda_min_clipped;
        let rescale = config.rescale_betas_zero_snr.unwrap_or(false);
        let tables = sigma_tables(config, (0.0001, 0.02), rescale)?;
        let train = tables.num_train_timesteps();
        check_steps(steps, train)?;
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Linspace);
        let offset = config.steps_offset.unwrap_or(0);

        // Timesteps whose lambda is below lambda_min_clipped are cut off.
        let clipped = tables
            .alphas_cumprod
            .iter()
            .filter(|&&a| {
                let a = a as f32;
                let lambda = a.sqrt().ln() - (1.0 - a).sqrt().ln();
                f64::from(lambda) < lambda_min_clipped
            })
            .count();
        let last = train - clipped;
        if last == 0 {
            return Err(Error::config(
                "lambda_min_clipped",
                "it clips every timestep",
            ));
        }
        let timesteps: Vec<f64> = match spacing {
            TimestepSpacing::Linspace => {
                let mut v: Vec<f64> = np_linspace(0.0, (last - 1) as f64, steps + 1)
                    .into_iter()
                    .map(f64::round_ties_even)
                    .rev()
                    .collect();
                v.pop();
                v
            }
            TimestepSpacing::Leading => {
                let ratio = last / (steps + 1);
                (1..=steps)
                    .rev()
                    .map(|k| (k * ratio).saturating_add(offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = train as f64 / steps as f64;
                np_arange(last as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|t| t.round_ties_even() - 1.0)
                    .collect()
            }
        };
        check_timesteps(&timesteps, train)?;
        let full = tables.sigmas();
        let log_sigmas: Vec<f32> = full.iter().map(|s| s.ln()).collect();
        let n = timesteps.len();
        let (lo, hi) = (f64::from(full[0]), f64::from(full[train - 1]));
        let round = config.beta_schedule != Some(BetaSchedule::SquaredcosCapV2);
        let (timesteps, sigmas): (Vec<f64>, Vec<f64>) = match spacing_kind {
            SigmaSpacing::Timesteps => {
                let s = timesteps.iter().map(|&t| interp(t, &full)).collect();
                (timesteps, s)
            }
            SigmaSpacing::Karras | SigmaSpacing::Exponential => {
                let s = if spacing_kind == SigmaSpacing::Karras {
                    karras_sigmas(lo, hi, n)
                } else {
                    exponential_sigmas(lo, hi, n)
                };
                let t = s
                    .iter()
                    .map(|&s| {
                        let t = sigma_to_t(s, &log_sigmas);
                        if round && spacing_kind == SigmaSpacing::Karras {
                            t.round_ties_even()
                        } else {
                            t
                        }
                    })
                    .collect();
                (t, s)
            }
        };
        // diffusers casts the timesteps to int64 (truncating).
        let timesteps = timesteps.into_iter().map(f64::trunc).collect();
        let mut sigmas: Vec<f64> = sigmas.into_iter().map(f32r).collect();
        sigmas.push(if final_zero { 0.0 } else { f64::from(full[0]) });
        let x0 = X0Processing::threshold_only(config);
        Ok(DpmSolverMultistep {
            positions: Positions::discrete(timesteps, Kind::Int64),
            sigmas,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            x0,
            order: options.solver_order,
            solver_type: options.solver_type,
            lower_order_final: options.lower_order_final,
            euler_at_final: options.euler_at_final,
            final_zero,
            history: Vec::new(),
            lower_order_nums: 0,
        })
    }

    /// The noise levels, one per timestep plus the final one.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The order of the update at position `j` (diffusers' rules).
    fn order_at(&self, j: usize) -> usize {
        let n = self.timesteps().len();
        let lower_final = j == n - 1
            && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);
        let lower_second = j + 2 == n && self.lower_order_final && n < 15;
        let order = if self.order == 1 || self.lower_order_nums < 1 || lower_final {
            1
        } else if self.order == 2 || self.lower_order_nums < 2 || lower_second {
            2
        } else {
            3
        };
        order.min(j + 1)
    }

    /// Coefficients (A, B, C, E) of x_t = A x + B m0 + C (m0 - m1) + E (m1 - m2).
    fn coefficients(&self, j: usize, order: usize) -> [f64; 4] {
        let (alpha_t, s_t, lambda_t) = alpha_sigma_lambda(self.sigmas[j + 1]);
        let (_, s_0, lambda_0) = alpha_sigma_lambda(self.sigmas[j]);
        let h = lambda_t - lambda_0;
        let em1 = (-h).exp() - 1.0;
        let a = s_t / s_0;
        let b = -alpha_t * em1;
        if order == 1 {
            return [a, b, 0.0, 0.0];
        }
        let (_, _, lambda_1) = alpha_sigma_lambda(self.sigmas[j - 1]);
        let r0 = (lambda_0 - lambda_1) / h;
        let k1 = alpha_t * (em1 / h + 1.0);
        if order == 2 {
            let c = match self.solver_type {
                SolverType::Midpoint => -0.5 * alpha_t * em1,
                SolverType::Heun => k1,
            };
            return [a, b, c / r0, 0.0];
        }
        let (_, _, lambda_2) = alpha_sigma_lambda(self.sigmas[j - 2]);
        let r1 = (lambda_1 - lambda_2) / h;
        let k2 = alpha_t * ((em1 + h) / (h * h) - 0.5);
        let rs = r0 + r1;
        let c = (k1 * (1.0 + r0 / rs) - k2 / rs) / r0;
        let e = -(k1 * r0 / rs - k2 / rs) / r1;
        [a, b, c, e]
    }
}

impl Solver for DpmSolverMultistep {
    fn name(&self) -> &'static str {
        "dpm++2m"
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        _noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let idx = self.positions.indices(i, x)?;
        let sigma = per(&idx, |k| self.sigmas[k]);
        let level = NoiseLevel::VariancePreservingSigma(sigma);
        let x0 = predicted_x0(self.prediction, model_output, x, &level)?;
        let x0 = self.x0.apply(x0)?;
        self.history.push(x0.shallow_clone());
        if self.history.len() > self.order {
            drop(self.history.remove(0));
        }
        let orders: Vec<usize> = idx.iter().map(|&j| self.order_at(j)).collect();
        let max_order = orders.iter().copied().max().unwrap_or(1);
        if self.history.len() < max_order {
            return Err(Error::Step(format!(
                "dpm++2m: an order-{max_order} update needs {max_order} earlier model outputs; \
                 step the positions in order from the first"
            )));
        }
        let cs: Vec<[f64; 4]> = idx
            .iter()
            .zip(&orders)
            .map(|(&j, &o)| self.coefficients(j, o))
            .collect();
        let col = |c: usize| -> Vec<f64> { cs.iter().map(|v| v[c]).collect() };
        let h = &self.history;
        let m0 = &h[h.len() - 1];
        let mut prev = x * coef(&col(0), x)? + m0 * coef(&col(1), x)?;
        if max_order >= 2 {
            let m1 = &h[h.len() - 2];
            prev += (m0 - m1) * coef(&col(2), x)?;
            if max_order >= 3 {
                let m2 = &h[h.len() - 3];
                prev += (m1 - m2) * coef(&col(3), x)?;
            }
        }
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn reset(&mut self) {
        self.history.clear();
        self.lower_order_nums = 0;
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        let (alpha, s, _) = alpha_sigma_lambda(self.sigmas[i]);
        (alpha, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_diffusers() {
        let cfg = SchedulerConfig::from_json_str("{}").unwrap();
        let s = DpmSolverMultistep::new(&cfg, 10).unwrap();
        // DPMSolverMultistepScheduler().set_timesteps(10): linspace spacing
        assert_eq!(
            s.timesteps(),
            &[999.0, 899.0, 799.0, 699.0, 599.0, 500.0, 400.0, 300.0, 200.0, 100.0]
        );
        assert_eq!(s.order, 2);
        assert_eq!(s.solver_type, SolverType::Midpoint);
        assert!(s.lower_order_final && s.final_zero && !s.euler_at_final);
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        assert_eq!(
            DpmSolverOptions::from_config(&cfg).unwrap(),
            DpmSolverOptions::default()
        );
    }

    /// The options of diffusers' `DPMSolverMultistepScheduler()` config file
    /// are the defaults; options written into a config read back the same
    /// and build the same solver.
    #[test]
    fn options_match_diffusers_and_round_trip() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schedule/tests/fixtures/diffusers_configs/dpm_solver.json"
        );
        let file = SchedulerConfig::load(path).unwrap();
        assert_eq!(
            DpmSolverOptions::from_config(&file).unwrap(),
            DpmSolverOptions::default()
        );
        let mut written = file.clone();
        DpmSolverOptions::default().write_to(&mut written);
        assert_eq!(written.to_json_string(), file.to_json_string());

        let options = DpmSolverOptions {
            solver_order: 3,
            solver_type: SolverType::Heun,
            lower_order_final: false,
            euler_at_final: true,
            final_sigmas_type: FinalSigmas::SigmaMin,
            lambda_min_clipped: -5.1,
            sigma_spacing: SigmaSpacing::Karras,
        };
        let empty = SchedulerConfig::default();
        let mut cfg = SchedulerConfig::default();
        options.write_to(&mut cfg);
        let cfg = SchedulerConfig::from_json_str(&cfg.to_json_string()).unwrap();
        assert_eq!(DpmSolverOptions::from_config(&cfg).unwrap(), options);
        let a = DpmSolverMultistep::with_options(&empty, 12, options).unwrap();
        let b = DpmSolverMultistep::new(&cfg, 12).unwrap();
        assert_eq!((a.timesteps(), a.sigmas()), (b.timesteps(), b.sigmas()));
        assert_eq!((a.order, a.solver_type), (3, SolverType::Heun));
        let bad = DpmSolverOptions {
            solver_order: 4,
            ..Default::default()
        };
        let e = DpmSolverMultistep::with_options(&empty, 12, bad).unwrap_err();
        assert!(e.to_string().contains("solver_order"), "{e}");
    }
}
