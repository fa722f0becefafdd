//! DDIM (Song et al. 2021), diffusers' `DDIMScheduler`: a deterministic
//! step at `eta = 0`, with `eta > 0` a stochastic one whose noise has
//! eta² times the DDPM posterior variance.
//!
//! With a = alpha_bar_t, a' = alpha_bar_{t'} at the previous timestep
//! t' = t - T / steps (diffusers uses this t' for every spacing; below 0 it
//! is `final_alpha_cumprod`: 1 with `set_alpha_to_one`, else alpha_bar_0):
//!
//! x_{t'} = sqrt(a') x̂_0 + sqrt(1 - a' - σ²) ε̂ + σ z,
//! σ = eta sqrt((1 - a') / (1 - a) (1 - a / a')),
//!
//! where x̂_0 is clipped or thresholded and ε̂ is the unclipped noise
//! prediction (diffusers' `use_clipped_model_output = False`).
//!
//! Config keys: `num_train_timesteps`, `beta_*`, `trained_betas`,
//! `clip_sample` (default true), `clip_sample_range`, `set_alpha_to_one`
//! (default true), `steps_offset`, `prediction_type`, `thresholding`,
//! `dynamic_thresholding_ratio`, `sample_max_value`, `timestep_spacing`
//! (default `leading`), `rescale_betas_zero_snr`.

use schedule::prediction::{x0_and_eps, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig};
use tch::{Kind, Tensor};

use crate::discrete::{discrete_setup, discrete_tables};
use crate::error::{Error, Result};
use crate::extra::{set_bool, Extra};
use crate::noise::NoiseSource;
use crate::solver::{coef, per, Positions, Solver, StepIndex, StepOutput};
use crate::tables::Tables;
use crate::x0::X0Processing;

/// DDIM's options: its `DDIMScheduler` key beyond [`SchedulerConfig`]'s
/// typed fields, and the eta of its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimOptions {
    /// The noise of a step (0: deterministic DDIM, 1: DDPM-like); the `eta`
    /// of diffusers' `DDIMScheduler.step`, not a config key. Default 0.
    pub eta: f64,
    /// Whether the step past the first training timestep ends at
    /// alpha_bar = 1 (the clean sample) rather than at alpha_bar_0
    /// (`set_alpha_to_one`, default true).
    pub set_alpha_to_one: bool,
}

impl Default for DdimOptions {
    /// diffusers' defaults.
    fn default() -> Self {
        DdimOptions {
            eta: 0.0,
            set_alpha_to_one: true,
        }
    }
}

impl DdimOptions {
    /// The options a scheduler config sets (`set_alpha_to_one`), with eta 0.
    pub fn from_config(config: &SchedulerConfig) -> Result<Self> {
        Ok(DdimOptions {
            eta: 0.0,
            set_alpha_to_one: Extra::new(config).bool("set_alpha_to_one", true)?,
        })
    }

    /// Writes the config keys of these options (`set_alpha_to_one`).
    pub fn write_to(&self, config: &mut SchedulerConfig) {
        set_bool(config, "set_alpha_to_one", self.set_alpha_to_one);
    }
}

/// diffusers' `DDIMScheduler`.
#[derive(Debug)]
pub struct Ddim {
    tables: Tables,
    positions: Positions,
    /// The timestep each position steps to (below 0: `final_alpha_cumprod`).
    prev_timesteps: Vec<i64>,
    prediction: PredictionType,
    x0: X0Processing,
    final_alpha_cumprod: f64,
    eta: f64,
}

impl Ddim {
    /// DDIM over `steps` steps as `DDIMScheduler.from_config(config)` with
    /// `set_timesteps(steps)`, stepping with `eta`.
    pub fn new(config: &SchedulerConfig, steps: usize, eta: f64) -> Result<Self> {
        let options = DdimOptions {
            eta,
            ..DdimOptions::from_config(config)?
        };
        Self::with_options(config, steps, options)
    }

    /// DDIM over `steps` steps with the schedule keys of `config` and the
    /// given options (the config's `set_alpha_to_one` is not read).
    pub fn with_options(
        config: &SchedulerConfig,
        steps: usize,
        options: DdimOptions,
    ) -> Result<Self> {
        let (tables, timesteps) = discrete_setup(config, steps)?;
        let step_ratio = (tables.num_train_timesteps() / steps) as i64;
        // diffusers steps from t to t - T / steps, whatever the spacing.
        let prev_timesteps = timesteps.iter().map(|&t| t as i64 - step_ratio).collect();
        Self::assemble(config, options, tables, timesteps, prev_timesteps)
    }

    /// DDIM along the given training timesteps (strictly decreasing, each
    /// below `num_train_timesteps`): position `i` steps from `timesteps[i]`
    /// to `timesteps[i + 1]`, the last one to `final_alpha_cumprod` (the
    /// clean sample with `set_alpha_to_one`). Used to start the reverse
    /// process at any timestep (see [`mod@crate::denoise`]).
    pub fn with_timesteps(config: &SchedulerConfig, timesteps: &[usize], eta: f64) -> Result<Self> {
        let options = DdimOptions {
            eta,
            ..DdimOptions::from_config(config)?
        };
        let tables = discrete_tables(config)?;
        let train = tables.num_train_timesteps();
        if timesteps.is_empty() {
            return Err(Error::ZeroSteps);
        }
        if let Some(&t) = timesteps.iter().find(|&&t| t >= train) {
            return Err(Error::Step(format!(
                "timestep {t} is outside the {train} training timesteps"
            )));
        }
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::Step(format!(
                "DDIM timesteps must decrease strictly, got {timesteps:?}"
            )));
        }
        let prev_timesteps = timesteps
            .iter()
            .skip(1)
            .map(|&t| t as i64)
            .chain(std::iter::once(-1))
            .collect();
        let timesteps = timesteps.iter().map(|&t| t as f64).collect();
        Self::assemble(config, options, tables, timesteps, prev_timesteps)
    }

    fn assemble(
        config: &SchedulerConfig,
        options: DdimOptions,
        tables: Tables,
        timesteps: Vec<f64>,
        prev_timesteps: Vec<i64>,
    ) -> Result<Self> {
        if !(0.0..=f64::MAX).contains(&options.eta) {
            return Err(Error::Unsupported(format!(
                "eta {}: expected a number >= 0",
                options.eta
            )));
        }
        let final_alpha_cumprod = if options.set_alpha_to_one {
            1.0
        } else {
            tables.alphas_cumprod[0]
        };
        Ok(Ddim {
            prev_timesteps,
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            x0: X0Processing::from_config(config, true),
            final_alpha_cumprod,
            eta: options.eta,
            tables,
            positions: Positions::discrete(timesteps, Kind::Int64),
        })
    }

    /// The training schedule.
    pub fn schedule(&self) -> &schedule::Schedule {
        &self.tables.schedule
    }

    /// alpha_bar_t for every training timestep, as diffusers holds it
    /// (float32 values).
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.tables.alphas_cumprod
    }

    /// The eta it steps with.
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// What the model predicts.
    pub fn prediction_type(&self) -> PredictionType {
        self.prediction
    }

    /// The timestep position `i` steps to; below 0 means the clean end
    /// (alpha_bar = `final_alpha_cumprod`).
    pub fn prev_timestep(&self, i: usize) -> i64 {
        self.prev_timesteps[i]
    }

    /// alpha_bar_t, or `final_alpha_cumprod` for t < 0.
    pub fn alpha_bar(&self, t: i64) -> f64 {
        if t >= 0 {
            self.tables.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Solver for Ddim {
    fn name(&self) -> &'static str {
        "ddim"
    }

    fn positions(&self) -> &Positions {
        &self.positions
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        i: StepIndex<'_>,
        x: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let idx = self.positions.indices(i, x)?;
        let a = per(&idx, |k| self.alpha_bar(self.timesteps()[k] as i64));
        let a_prev = per(&idx, |k| self.alpha_bar(self.prev_timesteps[k]));
        let level = NoiseLevel::from_alpha_bar(&a, x)?;
        let (x0, eps) = x0_and_eps(self.prediction, model_output, x, &level)?;
        let x0 = self.x0.apply(x0)?;
        let std: Vec<f64> = a
            .iter()
            .zip(&a_prev)
            .map(|(&a, &ap)| {
                let variance = (1.0 - ap) / (1.0 - a) * (1.0 - a / ap);
                self.eta * variance.sqrt()
            })
            .collect();
        let c_x0 = coef(&a_prev.iter().map(|a| a.sqrt()).collect::<Vec<_>>(), x)?;
        let dir: Vec<f64> = a_prev
            .iter()
            .zip(&std)
            .map(|(&ap, &s)| (1.0 - ap - s * s).sqrt())
            .collect();
        let mut prev = &c_x0 * &x0 + coef(&dir, x)? * &eps;
        if self.eta > 0.0 {
            let z = noise.randn(
                &model_output.size(),
                model_output.kind(),
                model_output.device(),
            )?;
            prev += coef(&std, x)? * z;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
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

    #[test]
    fn options_default_to_diffusers_and_round_trip() {
        let empty = SchedulerConfig::default();
        assert_eq!(
            DdimOptions::from_config(&empty).unwrap(),
            DdimOptions::default()
        );
        let options = DdimOptions {
            eta: 0.0,
            set_alpha_to_one: false,
        };
        let mut cfg = SchedulerConfig::default();
        options.write_to(&mut cfg);
        assert_eq!(
            cfg.to_json_string(),
            "{\n  \"set_alpha_to_one\": false\n}\n"
        );
        assert_eq!(DdimOptions::from_config(&cfg).unwrap(), options);
        let built = Ddim::with_options(&empty, 10, options).unwrap();
        assert_eq!(built.alpha_bar(-1), built.alphas_cumprod()[0]);
        let eta = DdimOptions {
            eta: -1.0,
            ..Default::default()
        };
        assert!(Ddim::with_options(&empty, 10, eta).is_err());
    }

    #[test]
    fn explicit_timesteps_step_to_the_next_entry() {
        let cfg = SchedulerConfig::default();
        let s = Ddim::with_timesteps(&cfg, &[500, 300, 0], 0.0).unwrap();
        assert_eq!(s.timesteps(), &[500.0, 300.0, 0.0]);
        assert_eq!(
            (0..3).map(|i| s.prev_timestep(i)).collect::<Vec<_>>(),
            vec![300, 0, -1]
        );
        assert_eq!(s.alpha_bar(-1), 1.0);
        let standard = Ddim::new(&cfg, 10, 0.0).unwrap();
        assert_eq!(standard.prev_timestep(0), 800);
        for bad in [&[300, 500][..], &[1000], &[]] {
            assert!(Ddim::with_timesteps(&cfg, bad, 0.0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn per_sample_steps_equal_separate_steps() {
        let cfg = SchedulerConfig::default();
        let mut s = Ddim::new(&cfg, 10, 0.0).unwrap();
        let x = Tensor::randn([2, 1, 4, 4], (Kind::Float, Device::Cpu));
        let out = x.tanh() * 0.5;
        let both = s
            .step(&out, StepIndex::PerSample(&[2, 7]), &x, &mut TorchRng)
            .unwrap()
            .prev_sample;
        for (k, i) in [(0, 2), (1, 7)] {
            let one = s
                .step(
                    &out.narrow(0, k, 1),
                    StepIndex::Batch(i),
                    &x.narrow(0, k, 1),
                    &mut TorchRng,
                )
                .unwrap()
                .prev_sample;
            let diff = (one - both.narrow(0, k, 1)).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "sample {k}: {diff}");
        }
    }
}
