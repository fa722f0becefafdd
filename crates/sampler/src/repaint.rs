//! Inpainting with RePaint (Lugmayr et al. 2022), after diffusers'
//! `RePaintScheduler` and `RePaintPipeline`: an unconditionally trained
//! model fills the masked region of an image.
//!
//! The reverse process runs over all pixels; after every step the known
//! region is replaced by the input image noised to the new timestep,
//! add_noise(image, t'), so the model sees a consistent x_t whose known part
//! is the truth. To let the filled region agree with the known one,
//! RePaint goes back and forth: after every `jump_length` steps down it
//! re-noises the sample `jump_length` steps up with the forward process
//! ("undo") and denoises again, `jump_n_sample` times in all (the jump
//! schedule of the paper, [`jump_schedule`]).
//!
//! A step from t to t' = t - T/steps (below 0: the clean end, alpha_bar = 1)
//! with a = alpha_bar_t, a' = alpha_bar_t':
//!
//! ```text
//! x̂_0, ε̂ = from the model output (epsilon, v_prediction or sample)
//! σ = eta sqrt((1 - a') / (1 - a) (1 - a / a'))       // eta = 1: the DDPM posterior
//! unknown = sqrt(a') x̂_0 + sqrt(1 - a' - σ²) ε̂ + σ z  // (no σ z at t = 0)
//! known = sqrt(a') image + sqrt(1 - a') z
//! x_t' = mask_known · known + (1 - mask_known) · unknown
//! ```
//!
//! and an undo from t' back up to t draws x_t ~ q(x_t | x_t') =
//! N(sqrt(a / a') x_t', (1 - a / a') I), the product of the per-step
//! (1 - beta) over t' < s <= t. (diffusers' `undo_step` uses the betas of
//! the T/steps timesteps above t instead, one jump too high; ours is the
//! forward process exactly.) The final step ends at alpha_bar = 1, where the
//! known region is the input image itself.
//!
//! Config keys (of the model's scheduler config): `num_train_timesteps`,
//! `beta_*`, `trained_betas`, `rescale_betas_zero_snr`, `prediction_type`,
//! `clip_sample` (default true), `clip_sample_range`, `thresholding`.

use schedule::prediction::{x0_and_eps, NoiseLevel};
use schedule::{PredictionType, SchedulerConfig};
use tch::{Kind, Tensor};

use crate::denoiser::Denoiser;
use crate::discrete::discrete_tables;
use crate::guidance::{Conditioning, Guided};
use crate::noise::NoiseSource;
use crate::sample::StepInfo;
use crate::solver::StepOutput;
use crate::tables::{check_steps, Tables};
use crate::x0::X0Processing;
use crate::{Error, Result};

/// diffusers' `get_schedule_jump` (`RePaintScheduler.set_timesteps`) in
/// units of inference steps: `steps - 1` down to 0, with `jump_n_sample - 1`
/// jumps of `jump_length` steps back up after every `jump_length` steps
/// (except near the start). Multiply by T / steps for training timesteps.
pub fn jump_schedule(steps: usize, jump_length: usize, jump_n_sample: usize) -> Vec<usize> {
    let mut jumps = std::collections::HashMap::new();
    if jump_length > 0 {
        let mut j = 0;
        while j + jump_length < steps {
            jumps.insert(j, jump_n_sample.saturating_sub(1));
            j += jump_length;
        }
    }
    let mut out = Vec::new();
    let mut t = steps;
    while t >= 1 {
        t -= 1;
        out.push(t);
        if let Some(left) = jumps.get_mut(&t) {
            if *left > 0 {
                *left -= 1;
                for _ in 0..jump_length {
                    t += 1;
                    out.push(t);
                }
            }
        }
    }
    out
}

/// The RePaint scheduler: the jump schedule over a model's training
/// schedule, its step and its undo.
#[derive(Debug)]
pub struct RePaint {
    tables: Tables,
    /// Training timesteps, one per schedule entry.
    timesteps: Vec<i64>,
    ratio: i64,
    prediction: PredictionType,
    x0: X0Processing,
    eta: f64,
}

impl RePaint {
    /// RePaint over `steps` inference steps of the model's schedule
    /// (`config`), going back `jump_length` steps `jump_n_sample - 1` times
    /// per stretch; `eta` scales the step noise (1: the DDPM posterior of the
    /// paper; 0: deterministic DDIM steps, diffusers' pipeline default).
    pub fn new(
        config: &SchedulerConfig,
        steps: usize,
        jump_length: usize,
        jump_n_sample: usize,
        eta: f64,
    ) -> Result<Self> {
        let tables = discrete_tables(config)?;
        let train = tables.num_train_timesteps();
        check_steps(steps, train)?;
        if jump_length == 0 || jump_n_sample == 0 {
            return Err(Error::Unsupported(format!(
                "jump length {jump_length} and jump samples {jump_n_sample}: expected both >= 1"
            )));
        }
        if !(0.0..=f64::MAX).contains(&eta) {
            return Err(Error::Unsupported(format!(
                "eta {eta}: expected a number >= 0"
            )));
        }
        let ratio = (train / steps) as i64;
        let timesteps = jump_schedule(steps, jump_length, jump_n_sample)
            .into_iter()
            .map(|t| t as i64 * ratio)
            .collect();
        Ok(RePaint {
            prediction: config.prediction_type.unwrap_or(PredictionType::Epsilon),
            x0: X0Processing::from_config(config, true),
            tables,
            timesteps,
            ratio,
            eta,
        })
    }

    /// The training timesteps of the schedule, in order; an entry below the
    /// one before it is a step (one model evaluation), above it an undo.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// How many model evaluations a run makes.
    pub fn model_evaluations(&self) -> usize {
        1 + self.timesteps.windows(2).filter(|w| w[1] < w[0]).count()
    }

    /// alpha_bar of a timestep; 1 (the clean end) below 0.
    fn alpha_bar(&self, t: i64) -> f64 {
        usize::try_from(t).map_or(1.0, |t| self.tables.alphas_cumprod[t])
    }

    /// One step from timestep `t` to `t - T/steps`: `model_output` is the
    /// model's output for `x` at `t`, `image` the input, `known` 1 where the
    /// image is kept and 0 where it is filled.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: i64,
        x: &Tensor,
        image: &Tensor,
        known: &Tensor,
        noise: &mut dyn NoiseSource,
    ) -> Result<StepOutput> {
        let a = self.alpha_bar(t);
        let a_prev = self.alpha_bar(t - self.ratio);
        let level = NoiseLevel::from_alpha_bar(&[a], x)?;
        let (x0, eps) = x0_and_eps(self.prediction, model_output, x, &level)?;
        let x0 = self.x0.apply(x0)?;
        let variance = (1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev);
        let std = self.eta * variance.max(0.0).sqrt();
        let z = noise.randn(&x.size(), x.kind(), x.device())?;
        let mut unknown = &x0 * a_prev.sqrt() + &eps * (1.0 - a_prev - std * std).max(0.0).sqrt();
        if t > 0 && self.eta > 0.0 {
            unknown += &z * std;
        }
        let known_part = image * a_prev.sqrt() + &z * (1.0 - a_prev).sqrt();
        let prev = known * known_part + (known.ones_like() - known) * unknown;
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// Re-noises `x` from timestep `from` up to `to` (> `from`; `from` below
    /// 0 is the clean end) with the forward process: x_to ~ q(x_to | x_from).
    pub fn undo_step(
        &self,
        x: &Tensor,
        from: i64,
        to: i64,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        if to <= from {
            return Err(Error::Step(format!(
                "undo from timestep {from} to {to}: expected a later timestep"
            )));
        }
        let alpha = self.alpha_bar(to) / self.alpha_bar(from);
        let z = noise.randn(&x.size(), x.kind(), x.device())?;
        Ok(x * alpha.sqrt() + z * (1.0 - alpha).max(0.0).sqrt())
    }
}

/// Inpaints `image` (`[N, C, H, W]` in [-1, 1]) where `fill` (`[N or 1, 1
/// or C, H, W]`, 1 = fill, 0 = keep) is set, with the RePaint schedule
/// `repaint`, starting from pure noise drawn from `noise`. The known region
/// of the result is `image` exactly. `progress` is called after every model
/// evaluation (its `index` counts evaluations).
pub fn inpaint(
    model: &dyn Denoiser,
    repaint: &RePaint,
    image: &Tensor,
    fill: &Tensor,
    conditioning: &Conditioning,
    noise: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let image = image.f_to_kind(Kind::Float)?;
    let size = image.size();
    let guided = Guided::new(conditioning, &size, image.device())?;
    let fill_size = fill.size();
    let fits = fill_size.len() == 4
        && (fill_size[0] == 1 || fill_size[0] == size[0])
        && (fill_size[1] == 1 || fill_size[1] == size[1])
        && fill_size[2..] == size[2..];
    if !fits {
        return Err(Error::Shape(format!(
            "mask of shape {fill_size:?} for images of shape {size:?}: expected [N or 1, 1 or C, H, W]"
        )));
    }
    let fill = fill
        .f_to_kind(Kind::Float)?
        .f_to_device(image.device())?
        .f_clamp(0.0, 1.0)?;
    let known = (fill.ones_like() - &fill).f_expand(size.as_slice(), false)?;
    let ts = repaint.timesteps();
    let total = repaint.model_evaluations();
    let mut x = noise.randn(&size, Kind::Float, image.device())?;
    // The timestep x is at; `ts[0]` first.
    let mut level = ts[0];
    let mut last = ts[0] + 1;
    let mut evals = 0;
    for &t in ts {
        if t < last {
            debug_assert_eq!(level, t, "RePaint steps from the sample's timestep");
            let tt = Tensor::full([guided.n], t, (Kind::Int64, image.device()));
            let out = guided.eval_mean(model, &x, &tt)?;
            let step = repaint.step(&out, t, &x, &image, &known, noise)?;
            let input = std::mem::replace(&mut x, step.prev_sample);
            level = t - repaint.ratio;
            progress(&StepInfo {
                index: evals,
                total,
                timestep: t as f64,
                model_input: &input,
                pred_original: &step.pred_original_sample,
                sample: &x,
            });
            evals += 1;
        } else {
            x = repaint.undo_step(&x, level, level + repaint.ratio, noise)?;
            level += repaint.ratio;
        }
        last = t;
    }
    Ok(&known * &image + (known.ones_like() - &known) * x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::ReplayNoise;
    use tch::Device;

    #[test]
    fn jump_schedule_matches_diffusers() {
        // Traced by hand through diffusers' RePaintScheduler.set_timesteps(6, 2, 2).
        assert_eq!(
            jump_schedule(6, 2, 2),
            vec![5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0]
        );
        assert_eq!(jump_schedule(4, 10, 10), vec![3, 2, 1, 0]);
        assert_eq!(jump_schedule(5, 1, 1), vec![4, 3, 2, 1, 0]);
        // The paper's setting: 250 steps, jumps of 10, 10 samples.
        let s = jump_schedule(250, 10, 10);
        let downs = s.windows(2).filter(|w| w[1] < w[0]).count() + 1;
        assert_eq!(downs, 250 + 9 * 240);
        assert_eq!(*s.last().unwrap(), 0);
    }

    /// A "model" that predicts x_0 = 0 everywhere: the filled region goes
    /// to 0, the known region stays the image exactly.
    #[test]
    fn known_region_is_kept_and_levels_stay_consistent() {
        let cfg = SchedulerConfig::from_json_str(r#"{"prediction_type": "sample"}"#).unwrap();
        let repaint = RePaint::new(&cfg, 10, 3, 3, 1.0).unwrap();
        assert_eq!(repaint.timesteps()[0], 900);
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::rand([2, 1, 4, 4], opts) * 2.0 - 1.0;
        let fill = Tensor::zeros([1, 1, 4, 4], opts);
        let _ = fill.narrow(3, 2, 2).fill_(1.0);
        let model =
            |x: &Tensor, _t: &Tensor, _c: &crate::Cond| -> Result<Tensor> { Ok(x.zeros_like()) };
        let draws = repaint.timesteps().len() + 1;
        let mut noise = ReplayNoise::new(&Tensor::randn([draws as i64, 2, 1, 4, 4], opts));
        let mut evals = 0;
        let out = inpaint(
            &model,
            &repaint,
            &image,
            &fill,
            &Conditioning::default(),
            &mut noise,
            &mut |_| evals += 1,
        )
        .unwrap();
        assert_eq!(evals, repaint.model_evaluations());
        let kept = out.narrow(3, 0, 2) - image.narrow(3, 0, 2);
        assert_eq!(kept.abs().max().double_value(&[]), 0.0);
        let filled = out.narrow(3, 2, 2).abs().max().double_value(&[]);
        assert!(filled < 1e-6, "{filled}");
        let e = inpaint(
            &model,
            &repaint,
            &image,
            &Tensor::zeros([1, 1, 3, 4], opts),
            &Conditioning::default(),
            &mut noise,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("mask of shape [1, 1, 3, 4]"), "{e}");
    }

    #[test]
    fn undo_is_the_forward_process() {
        let cfg = SchedulerConfig::default();
        let repaint = RePaint::new(&cfg, 100, 10, 10, 1.0).unwrap();
        tch::manual_seed(3);
        let x = Tensor::ones([20000], (Kind::Double, Device::Cpu));
        let mut rng = crate::noise::TorchRng;
        let up = repaint.undo_step(&x, 100, 200, &mut rng).unwrap();
        let alpha = repaint.alpha_bar(200) / repaint.alpha_bar(100);
        let mean = up.mean(Kind::Double).double_value(&[]);
        let var = up.var(true).double_value(&[]);
        assert!((mean - alpha.sqrt()).abs() < 0.02, "{mean}");
        assert!((var - (1.0 - alpha)).abs() < 0.02, "{var}");
        assert!(repaint.undo_step(&x, 200, 100, &mut rng).is_err());
        assert!(RePaint::new(&cfg, 10, 0, 1, 1.0).is_err());
    }
}
