//! PNDM (Liu et al. 2022, pseudo numerical methods for diffusion models),
//! diffusers' `PNDMScheduler`: Stable Diffusion 1.x's default scheduler,
//! which runs it with `skip_prk_steps: true` (PLMS, the linear multistep
//! part alone).
//!
//! Every update is the transfer of formula (9) of the paper from t to t',
//! with a = alpha_bar_t, a' = alpha_bar_{t'} (below 0: `final_alpha_cumprod`,
//! 1 with `set_alpha_to_one`, else alpha_bar_0) and e the combined model
//! output:
//!
//! x_{t'} = sqrt(a' / a) x_t - (a' - a) e / (a sqrt(1 - a') + sqrt(a (1 - a) a')),
//!
//! where a v-prediction is first read as the noise sqrt(a) v + sqrt(1 - a) x_t.
//! The PLMS part combines the last model outputs e_0 (newest) .. e_3 as a
//! linear multistep method: (3 e_0 - e_1) / 2, (23 e_0 - 16 e_1 + 5 e_2) / 12,
//! then (55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24. With `skip_prk_steps` its
//! first step is a Heun step: the model is evaluated at x_t, then again at
//! the Euler estimate of the next timestep, and the step is redone from x_t
//! with the mean of both outputs, so the timestep list repeats the second
//! one (`steps + 1` model evaluations). Without it the first three steps are
//! Runge-Kutta steps of four evaluations each at t, t - δ/2, t - δ/2 and
//! t - δ (`steps + 9` evaluations).
//!
//! As in diffusers, which branch a step takes follows the number of steps
//! taken since the last [`Solver::reset`] (a start part way down the list,
//! as image-to-image does, begins with the first-order step there), and the
//! samples of a batch are stepped together.
//!
//! Config keys (defaults are diffusers'): `num_train_timesteps`, `beta_*`
//! (0.0001 to 0.02), `trained_betas`, `skip_prk_steps` (false),
//! `set_alpha_to_one` (false), `prediction_type` (`epsilon` or
//! `v_prediction`; `sample` is an error, as in diffusers),
//! `timestep_spacing` (`leading`), `steps_offset`.

use schedule::prediction::{predicted_x0, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig, TimestepSpacing};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::extra::{set_bool, Extra};
use crate::noise::NoiseSource;
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
use crate::tables::{check_steps, check_timesteps, spaced_timesteps, Tables};

/// The order of the linear multistep method (diffusers' `pndm_order`).
const PNDM_ORDER: usize = 4;
/// Model evaluations of the Runge-Kutta warm-up: three steps of four.
const PRK_EVALUATIONS: usize = 3 * PNDM_ORDER;

/// PNDM's options: its `PNDMScheduler` keys beyond [`SchedulerConfig`]'s
/// typed fields, with diffusers' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PndmOptions {
    /// Whether to start with a Heun step instead of three Runge-Kutta steps
    /// (`skip_prk_steps`, default false; Stable Diffusion sets it).
    pub skip_prk_steps: bool,
    /// Whether the step past the first training timestep ends at
    /// alpha_bar = 1 (the clean sample) rather than at alpha_bar_0
    /// (`set_alpha_to_one`, default false).
    pub set_alpha_to_one: bool,
}

impl PndmOptions {
    /// The options a scheduler config sets, diffusers' defaults for the keys
    /// it lacks.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        let extra = Extra::new(config);
        Ok(PndmOptions {
            skip_prk_steps: extra.bool("skip_prk_steps", false)?,
            set_alpha_to_one: extra.bool("set_alpha_to_one", false)?,
        })
    }

    /// Writes the config keys of these options.
    pub fn write_to(&self, config: &mut SchedulerConfig) {
        set_bool(config, "skip_prk_steps", self.skip_prk_steps);
        set_bool(config, "set_alpha_to_one", self.set_alpha_to_one);
    }
}

/// diffusers' `PNDMScheduler`.
#[derive(Debug)]
pub struct Pndm {
    tables: Tables,
    positions: Positions,
    prediction: PredictionType,
    final_alpha_cumprod: f64,
    /// `num_train_timesteps // steps`.
    step_ratio: i64,
    steps: usize,
    skip_prk_steps: bool,
    /// Steps taken since the last reset (diffusers' `counter`).
    counter: usize,
    /// The model outputs the multistep formulas combine, oldest first.
    ets: Vec<Tensor>,
    /// The sample a Heun or Runge-Kutta step restarts from.
    cur_sample: Option<Tensor>,
    /// The running Runge-Kutta sum of model outputs.
    cur_model_output: Option<Tensor>,
}

impl Pndm {
    /// PNDM over `steps` steps as `PNDMScheduler.from_config(config)` with
    /// `set_timesteps(steps)`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_options(config, steps, PndmOptions::from_config(config)?)
    }

    /// PNDM over `steps` steps with the schedule keys of `config` and the
    /// given options (the config's option keys are not read).
    pub fn with_options(
        config: &SchedulerConfig,
        steps: usize,
        options: PndmOptions,
    ) -> Result<Self> {
        let prediction = config.prediction_type.unwrap_or(PredictionType::Epsilon);
        if prediction == PredictionType::Sample {
            return Err(Error::config(
                "prediction_type",
                "\"sample\" is not supported by PNDM: expected \"epsilon\" or \"v_prediction\"",
            ));
        }
        // PNDMScheduler has no zero-terminal-SNR option: the key is ignored.
        let tables = Tables::new(
            config,
            config.beta_start.unwrap_or(0.0001),
            config.beta_end.unwrap_or(0.02),
            false,
        )?;
        let train = tables.num_train_timesteps();
        check_steps(steps, train)?;
        if !options.skip_prk_steps && steps < PNDM_ORDER {
            return Err(Error::config(
                "skip_prk_steps",
                format!(
                    "false needs at least {PNDM_ORDER} inference steps (the Runge-Kutta \
                     warm-up takes 3 of them), got {steps}; set it to true for PLMS"
                ),
            ));
        }
        let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
        let offset = config.steps_offset.unwrap_or(0);
        // diffusers' `_timesteps`, ascending; checked before any arithmetic
        // on them (a huge `steps_offset` is an error, not an overflow).
        let spaced = spaced_timesteps(spacing, train, steps, offset, true);
        check_timesteps(&spaced, train)?;
        let base: Vec<i64> = spaced.into_iter().rev().map(|t| t as i64).collect();
        let step_ratio = (train / steps) as i64;
        let timesteps = if options.skip_prk_steps {
            plms_timesteps(&base)
        } else {
            let mut ts = prk_timesteps(&base, step_ratio / 2);
            ts.extend(base[..base.len() - 3].iter().rev());
            ts
        };
        let timesteps: Vec<f64> = timesteps.into_iter().map(|t| t as f64).collect();
        check_timesteps(&timesteps, train)?;
        let final_alpha_cumprod = if options.set_alpha_to_one {
            1.0
        } else {
            tables.alphas_cumprod[0]
        };
        Ok(Pndm {
            tables,
            positions: Positions::discrete(timesteps, Kind::Int64),
            prediction,
            final_alpha_cumprod,
            step_ratio,
            steps,
            skip_prk_steps: options.skip_prk_steps,
            counter: 0,
            ets: Vec::new(),
            cur_sample: None,
            cur_model_output: None,
        })
    }

    /// alpha_bar_t for every training timestep, as diffusers holds it
    /// (float32 values).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.tables.alphas_cumprod
    }

    /// Whether it starts with a Heun step (true) or Runge-Kutta steps.
    pub fn skip_prk_steps(&self) -> bool {
        self.skip_prk_steps
    }

    /// alpha_bar_t, or `final_alpha_cumprod` for t < 0.
    pub fn alpha_bar(&self, t: i64) -> f64 {
        if t >= 0 {
            self.tables.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }

    /// diffusers' `_get_prev_sample`: `sample` at timesteps `t` moved to
    /// `t_prev` with the combined model output `e`, per sample.
    fn prev_sample(
        &self,
        sample: &Tensor,
        t: &[i64],
        t_prev: &[i64],
        e: &Tensor,
    ) -> Result<Tensor> {
        let a: Vec<f64> = t.iter().map(|&t| self.alpha_bar(t)).collect();
        let a_prev: Vec<f64> = t_prev.iter().map(|&t| self.alpha_bar(t)).collect();
        let e = match self.prediction {
            PredictionType::VPrediction => {
                let c_v: Vec<f64> = a.iter().map(|a| a.sqrt()).collect();
                let c_x: Vec<f64> = a.iter().map(|a| (1.0 - a).sqrt()).collect();
                e * coef(&c_v, sample)? + sample * coef(&c_x, sample)?
            }
            _ => e.shallow_clone(),
        };
        let (c_sample, c_e): (Vec<f64>, Vec<f64>) = a
            .iter()
            .zip(&a_prev)
            .map(|(&a, &ap)| {
                let denom = a * (1.0 - ap).sqrt() + (a * (1.0 - a) * ap).sqrt();
                ((ap / a).sqrt(), (ap - a) / denom)
            })
            .unzip();
        Ok(sample * coef(&c_sample, sample)? - e * coef(&c_e, sample)?)
    }

    /// diffusers' `step_prk`: one evaluation of a Runge-Kutta step.
    fn step_prk(&mut self, output: &Tensor, t: &[i64], x: &Tensor) -> Result<Tensor> {
        let c = self.counter;
        let diff = if c % 2 == 1 { 0 } else { self.step_ratio / 2 };
        let t_prev: Vec<i64> = t.iter().map(|t| t - diff).collect();
        // Every evaluation of a Runge-Kutta step starts from its first timestep.
        let start = self.timesteps()[c / PNDM_ORDER * PNDM_ORDER] as i64;
        let e = match c % PNDM_ORDER {
            0 => {
                self.cur_model_output = Some(output * (1.0 / 6.0));
                self.ets.push(output.shallow_clone());
                self.cur_sample = Some(x.shallow_clone());
                output.shallow_clone()
            }
            1 | 2 => {
                let sum = self.cur_model_output.take().ok_or_else(out_of_order)?;
                self.cur_model_output = Some(sum + output * (1.0 / 3.0));
                output.shallow_clone()
            }
            _ => {
                let sum = self.cur_model_output.take().ok_or_else(out_of_order)?;
                sum + output * (1.0 / 6.0)
            }
        };
        let sample = self.cur_sample.as_ref().unwrap_or(x).shallow_clone();
        self.prev_sample(&sample, &vec![start; t.len()], &t_prev, &e)
    }

    /// diffusers' `step_plms`: one linear multistep (or the first Heun) step.
    fn step_plms(&mut self, output: &Tensor, t: &[i64], x: &Tensor) -> Result<Tensor> {
        if !self.skip_prk_steps && self.ets.len() < 3 {
            return Err(out_of_order());
        }
        let ratio = self.step_ratio;
        let (from, to): (Vec<i64>, Vec<i64>) = if self.counter == 1 {
            // The Heun correction: the step from the previous timestep again.
            t.iter().map(|&t| (t + ratio, t)).unzip()
        } else {
            if self.ets.len() > 3 {
                drop(self.ets.drain(..self.ets.len() - 3));
            }
            self.ets.push(output.shallow_clone());
            t.iter().map(|&t| (t, t - ratio)).unzip()
        };
        let ets = &self.ets;
        let n = ets.len();
        let (e, sample) = match (n, self.counter) {
            (1, 0) => {
                self.cur_sample = Some(x.shallow_clone());
                (output.shallow_clone(), x.shallow_clone())
            }
            (1, 1) => {
                let sample = self.cur_sample.take().ok_or_else(out_of_order)?;
                ((output + &ets[0]) / 2, sample)
            }
            (2, _) => ((&ets[1] * 3 - &ets[0]) / 2, x.shallow_clone()),
            (3, _) => (
                (&ets[2] * 23 - &ets[1] * 16 + &ets[0] * 5) / 12,
                x.shallow_clone(),
            ),
            (4, _) => (
                (&ets[3] * 55 - &ets[2] * 59 + &ets[1] * 37 - &ets[0] * 9) * (1.0 / 24.0),
                x.shallow_clone(),
            ),
            _ => return Err(out_of_order()),
        };
        self.prev_sample(&sample, &from, &to, &e)
    }
}

fn out_of_order() -> Error {
    Error::Step(
        "pndm: its steps build on the earlier ones; step the positions in order after a reset"
            .into(),
    )
}

/// The timestep list with `skip_prk_steps` (descending): every timestep of
/// `base` (ascending), the second largest twice.
fn plms_timesteps(base: &[i64]) -> Vec<i64> {
    let n = base.len();
    let mut ts = base[..n - 1].to_vec();
    if n >= 2 {
        ts.push(base[n - 2]);
    }
    ts.push(base[n - 1]);
    ts.reverse();
    ts
}

/// The Runge-Kutta part of the timestep list (descending): three steps over
/// the four largest timesteps of `base` (ascending), each evaluated at its
/// start, twice half-way and at its end (the next step's start).
fn prk_timesteps(base: &[i64], half: i64) -> Vec<i64> {
    let last4 = &base[base.len() - PNDM_ORDER..];
    // [t0, t0 + half, t1, t1 + half, t2, t2 + half, t3]
    let points: Vec<i64> = last4
        .iter()
        .flat_map(|&t| [t, t + half])
        .take(2 * PNDM_ORDER - 1)
        .collect();
    // Each point twice, without the first and last copies, largest first.
    let mut ts: Vec<i64> = points.iter().flat_map(|&t| [t, t]).collect();
    ts.remove(0);
    ts.pop();
    ts.reverse();
    ts
}

impl Solver for Pndm {
    fn name(&self) -> &'static str {
        "pndm"
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
        let t: Vec<i64> = idx.iter().map(|&k| self.timesteps()[k] as i64).collect();
        let a = per(&idx, |k| self.alpha_bar(self.timesteps()[k] as i64));
        let x0 = predicted_x0(
            self.prediction,
            model_output,
            x,
            &NoiseLevel::from_alpha_bar(&a, x)?,
        )?;
        let prev = if !self.skip_prk_steps && self.counter < PRK_EVALUATIONS {
            self.step_prk(model_output, &t, x)?
        } else {
            self.step_plms(model_output, &t, x)?
        };
        self.counter += 1;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn reset(&mut self) {
        self.counter = 0;
        self.ets.clear();
        self.cur_sample = None;
        self.cur_model_output = None;
    }

    fn num_inference_steps(&self) -> usize {
        self.steps
    }

    fn noise_coefficients(&self, i: usize) -> (f64, f64) {
        let a = self.alpha_bar(self.timesteps()[i] as i64);
        (a.sqrt(), (1.0 - a).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::TorchRng;
    use tch::Device;

    fn config(json: &str) -> SchedulerConfig {
        SchedulerConfig::from_json_str(json).unwrap()
    }

    #[test]
    fn a_huge_steps_offset_is_an_error_not_an_overflow() {
        for skip in [true, false] {
            let cfg = config(&format!(
                r#"{{"skip_prk_steps": {skip}, "steps_offset": 9223372036854775807}}"#
            ));
            let err = Pndm::new(&cfg, 10).unwrap_err().to_string();
            assert!(err.contains("steps_offset"), "{err}");
        }
    }

    #[test]
    fn timesteps_match_diffusers() {
        // PNDMScheduler(skip_prk_steps=True, steps_offset=1).set_timesteps(10)
        let plms = Pndm::new(
            &config(r#"{"skip_prk_steps": true, "steps_offset": 1}"#),
            10,
        )
        .unwrap();
        assert_eq!(
            plms.timesteps(),
            &[901.0, 801.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0, 1.0]
        );
        assert_eq!(plms.num_inference_steps(), 10);
        // PNDMScheduler().set_timesteps(10): 12 Runge-Kutta evaluations, then PLMS.
        let prk = Pndm::new(&SchedulerConfig::default(), 10).unwrap();
        assert_eq!(
            prk.timesteps(),
            &[
                900.0, 850.0, 850.0, 800.0, 800.0, 750.0, 750.0, 700.0, 700.0, 650.0, 650.0, 600.0,
                600.0, 500.0, 400.0, 300.0, 200.0, 100.0, 0.0
            ]
        );
        assert_eq!(prk.num_inference_steps(), 10);
        let one = Pndm::new(&config(r#"{"skip_prk_steps": true}"#), 1).unwrap();
        assert_eq!(one.timesteps(), &[0.0]);
    }

    #[test]
    fn options_default_to_diffusers_and_round_trip() {
        let empty = SchedulerConfig::default();
        assert_eq!(
            PndmOptions::from_config(&empty).unwrap(),
            PndmOptions::default()
        );
        let options = PndmOptions {
            skip_prk_steps: true,
            set_alpha_to_one: true,
        };
        let mut cfg = SchedulerConfig::default();
        options.write_to(&mut cfg);
        assert_eq!(PndmOptions::from_config(&cfg).unwrap(), options);
        let built = Pndm::with_options(&empty, 10, options).unwrap();
        assert_eq!(built.alpha_bar(-1), 1.0);
        let built = Pndm::new(&empty, 10).unwrap();
        assert_eq!(built.alpha_bar(-1), built.alphas_cumprod()[0]);
    }

    #[test]
    fn unsupported_settings_name_the_key() {
        let e = Pndm::new(&config(r#"{"prediction_type": "sample"}"#), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prediction_type") && e.contains("sample"), "{e}");
        let e = Pndm::new(&SchedulerConfig::default(), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("skip_prk_steps") && e.contains("got 3"), "{e}");
        assert!(Pndm::new(&config(r#"{"skip_prk_steps": true}"#), 3).is_ok());
        let e = Pndm::new(&config(r#"{"skip_prk_steps": "yes"}"#), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("skip_prk_steps"), "{e}");
    }

    /// Steps out of order after a reset are an error, not a wrong answer.
    #[test]
    fn the_heun_step_needs_the_first_one() {
        let mut s = Pndm::new(&config(r#"{"skip_prk_steps": true}"#), 10).unwrap();
        let x = Tensor::randn([1, 1, 2, 2], (Kind::Float, Device::Cpu));
        s.step(&x, StepIndex::Batch(0), &x, &mut TorchRng).unwrap();
        s.reset();
        s.counter = 1;
        assert!(s.step(&x, StepIndex::Batch(1), &x, &mut TorchRng).is_err());
    }
}
