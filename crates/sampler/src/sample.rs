//! The reverse process: one loop for every [`Solver`], with classifier-free
//! guidance for class-conditional models.
//!
//! ```text
//! x = x_T * init_noise_sigma
//! for i in 0..timesteps.len():
//!     out = model(scale_model_input(x, i), t_i, labels)
//!     x = step(out, i, x).prev_sample
//! ```
//!
//! Classifier-free guidance (Ho & Salimans 2022) runs the conditional and
//! the unconditional batch in one model call (the unconditional half first,
//! as diffusers' pipelines do) and combines them as
//! uncond + s (cond - uncond). The unconditional label is the caller's
//! `null_label`; for a model with a learned class table the command line
//! takes its last row, `num_class_embeds - 1` (the label a trainer with
//! label dropout reserves for "no class"). With a model that predicts its
//! variance (2C output channels) only the first C channels are guided and
//! the variance comes from the conditional half.

use tch::{Kind, Tensor};

use crate::noise::NoiseSource;
use crate::solver::{model_timesteps, Solver, StepIndex};
use crate::{Error, Result};

/// A denoising model: `(x_t, t [N], class labels [N]) -> output`.
pub type Model<'a> = dyn Fn(&Tensor, &Tensor, Option<&Tensor>) -> Result<Tensor> + 'a;

/// Class conditioning and guidance.
#[derive(Debug, Clone, Copy)]
pub struct Conditioning<'a> {
    /// `[N]` integer labels, for class-conditional models.
    pub class_labels: Option<&'a Tensor>,
    /// s of classifier-free guidance; 1 means no guidance (the conditional
    /// output only).
    pub guidance_scale: f64,
    /// The label of the unconditional half, required when guiding.
    pub null_label: Option<i64>,
}

impl Default for Conditioning<'_> {
    fn default() -> Self {
        Conditioning {
            class_labels: None,
            guidance_scale: 1.0,
            null_label: None,
        }
    }
}

/// What the loop reports after each model evaluation.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Position in the solver's timestep list.
    pub index: usize,
    /// Length of that list (model evaluations in all).
    pub total: usize,
    /// The timestep the model saw.
    pub timestep: f64,
    /// x_t as the model saw it (DDPM space, for the sigma-space solvers too).
    pub model_input: &'a Tensor,
    /// The solver's predicted x_0.
    pub pred_original: &'a Tensor,
    /// The sample after the step.
    pub sample: &'a Tensor,
}

/// Runs the reverse process from the standard-normal `x_t` (`[N, C, ..]`,
/// before any solver scaling) and returns the final sample, in the model's
/// space (not clipped). `progress` is called after every model evaluation.
pub fn sample(
    model: &Model<'_>,
    solver: &mut dyn Solver,
    x_t: &Tensor,
    conditioning: &Conditioning<'_>,
    noise: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Tensor> {
    let x = x_t.f_to_kind(Kind::Float)? * solver.init_noise_sigma();
    sample_from(model, solver, &x, 0, conditioning, noise, progress)
}

/// Runs the reverse process from position `start` of the solver's timestep
/// list: `x` is the sample at that position in the solver's space (for
/// example [`crate::solver::add_noise`] of an image, or the scaled initial
/// noise at `start = 0`). With `start == timesteps().len()` it returns `x`
/// unchanged. The solver's history is reset first, so multistep solvers
/// begin with their first-order update.
pub fn sample_from(
    model: &Model<'_>,
    solver: &mut dyn Solver,
    x: &Tensor,
    start: usize,
    conditioning: &Conditioning<'_>,
    noise: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let guided = Guided::new(conditioning, &x.size())?;
    let total = solver.timesteps().len();
    if start > total {
        return Err(Error::Step(format!(
            "start position {start} is past the solver's {total} timesteps"
        )));
    }
    solver.reset();
    let mut x = x.f_to_kind(Kind::Float)?;
    for i in start..total {
        let input = solver.scale_model_input(&x, StepIndex::Batch(i))?;
        let t = model_timesteps(&*solver, StepIndex::Batch(i), guided.n, x.device())?;
        let out = guided.eval(model, &input, &t)?;
        let out = if out.size()[1] == 2 * guided.c && !solver.uses_predicted_variance() {
            out.narrow(1, 0, guided.c)
        } else {
            out
        };
        let step = solver.step(&out, StepIndex::Batch(i), &x, noise)?;
        x = step.prev_sample;
        progress(&StepInfo {
            index: i,
            total,
            timestep: solver.timesteps()[i],
            model_input: &input,
            pred_original: &step.pred_original_sample,
            sample: &x,
        });
    }
    Ok(x)
}

/// One model evaluation with the batch's conditioning: the conditional and
/// unconditional halves in one call when guiding. Checked once per batch.
#[derive(Debug)]
pub(crate) struct Guided<'a> {
    labels: Option<&'a Tensor>,
    /// Null labels then the labels, when guiding.
    both: Option<Tensor>,
    scale: f64,
    size: Vec<i64>,
    /// Batch size and channels of the samples.
    pub n: i64,
    pub c: i64,
}

impl<'a> Guided<'a> {
    /// Checks `conditioning` against samples of shape `size` (`[N, C, ..]`).
    pub(crate) fn new(conditioning: &Conditioning<'a>, size: &[i64]) -> Result<Self> {
        if size.len() < 2 {
            return Err(Error::Shape(format!(
                "samples of shape {size:?}: expected [N, C, ...]"
            )));
        }
        let (n, c) = (size[0], size[1]);
        let labels = conditioning.class_labels;
        if let Some(l) = labels {
            if l.size() != [n] {
                return Err(Error::Labels(format!(
                    "shape {:?}: expected one label per sample, [{n}]",
                    l.size()
                )));
            }
        }
        let both = match labels {
            Some(l) if conditioning.guidance_scale != 1.0 => {
                let null = conditioning.null_label.ok_or_else(|| {
                    Error::Labels(
                        "classifier-free guidance needs the unconditional (null) label".into(),
                    )
                })?;
                let nulls = Tensor::full([n], null, (l.kind(), l.device()));
                Some(Tensor::cat(&[&nulls, l], 0))
            }
            None if conditioning.guidance_scale != 1.0 => {
                return Err(Error::Labels(format!(
                    "guidance scale {} needs a class-conditional model and labels",
                    conditioning.guidance_scale
                )))
            }
            _ => None,
        };
        Ok(Guided {
            labels,
            both,
            scale: conditioning.guidance_scale,
            size: size.to_vec(),
            n,
            c,
        })
    }

    /// The (guided) model output for `input` at timesteps `t` (`[N]`),
    /// variance channels included when the model has them.
    pub(crate) fn eval(&self, model: &Model<'_>, input: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (n, c) = (self.n, self.c);
        match &self.both {
            Some(both) => {
                let out = model(
                    &Tensor::cat(&[input, input], 0),
                    &Tensor::cat(&[t, t], 0),
                    Some(both),
                )?;
                check_output(&out, 2 * n, c, &self.size)?;
                guide(&out, n, c, self.scale)
            }
            None => {
                let out = model(input, t, self.labels)?;
                check_output(&out, n, c, &self.size)?;
                Ok(out)
            }
        }
    }

    /// [`Guided::eval`] without the variance channels.
    pub(crate) fn eval_mean(
        &self,
        model: &Model<'_>,
        input: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        let out = self.eval(model, input, t)?;
        Ok(if out.size()[1] == 2 * self.c {
            out.narrow(1, 0, self.c)
        } else {
            out
        })
    }
}

/// The model output must be `[n, C or 2C, ..]` with the sample's spatial size.
fn check_output(out: &Tensor, n: i64, c: i64, sample: &[i64]) -> Result<()> {
    let s = out.size();
    let ok = s.len() == sample.len()
        && s[0] == n
        && (s[1] == c || s[1] == 2 * c)
        && s[2..] == sample[2..];
    if ok {
        Ok(())
    } else {
        Err(Error::Shape(format!(
            "the model returned shape {s:?} for samples of shape {sample:?}: expected [{n}, {c} or {}, ..]",
            2 * c
        )))
    }
}

/// uncond + s (cond - uncond) on the first `c` channels of a `[2n, ..]`
/// output whose first half is unconditional; extra (variance) channels come
/// from the conditional half.
pub fn guide(out: &Tensor, n: i64, c: i64, scale: f64) -> Result<Tensor> {
    let uncond = out.f_narrow(0, 0, n)?;
    let cond = out.f_narrow(0, n, n)?;
    let eps_u = uncond.f_narrow(1, 0, c)?;
    let eps_c = cond.f_narrow(1, 0, c)?;
    let guided = &eps_u + (&eps_c - &eps_u) * scale;
    let channels = out.size()[1];
    Ok(if channels > c {
        Tensor::cat(&[guided, cond.f_narrow(1, c, channels - c)?], 1)
    } else {
        guided
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::factory::{by_name, SolverOptions};
    use crate::noise::TorchRng;
    use schedule::SchedulerConfig;
    use std::cell::RefCell;
    use tch::Device;

    #[test]
    fn guidance_batches_cond_and_uncond_together() {
        let calls = RefCell::new(Vec::new());
        // A "model" whose output depends on the label: x * (1 + label).
        let model = |x: &Tensor, _t: &Tensor, l: Option<&Tensor>| -> Result<Tensor> {
            let l = l.unwrap();
            calls.borrow_mut().push(Vec::<i64>::try_from(l).unwrap());
            Ok(x * (l.to_kind(Kind::Float) + 1.0).reshape([-1, 1, 1, 1]) * 0.1)
        };
        let cfg = SchedulerConfig::default();
        let mut solver = by_name("ddim", &cfg, 2, &SolverOptions::default()).unwrap();
        let x = Tensor::ones([2, 1, 2, 2], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 2]);
        let cond = Conditioning {
            class_labels: Some(&labels),
            guidance_scale: 3.0,
            null_label: Some(9),
        };
        let mut outs = Vec::new();
        let _ = sample(
            &model,
            solver.as_mut(),
            &x,
            &cond,
            &mut TorchRng,
            &mut |s| outs.push(s.pred_original.shallow_clone()),
        )
        .unwrap();
        assert_eq!(calls.borrow()[0], vec![9, 9, 1, 2]);
        assert_eq!(calls.borrow().len(), 2);
        assert_eq!(outs.len(), 2);
        // uncond + s (cond - uncond): 1 + 3 (2 - 1) and 1 + 3 (3 - 1)
        let g = guide(
            &Tensor::from_slice(&[1.0f32, 1.0, 2.0, 3.0]).reshape([4, 1, 1, 1]),
            2,
            1,
            3.0,
        )
        .unwrap();
        assert_eq!(
            Vec::<f32>::try_from(g.flatten(0, -1)).unwrap(),
            vec![4.0, 7.0]
        );
        let e = sample(
            &model,
            solver.as_mut(),
            &x,
            &Conditioning {
                null_label: None,
                ..cond
            },
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("null"), "{e}");
    }

    #[test]
    fn variance_channels_are_dropped_for_solvers_without_them() {
        let model = |x: &Tensor, _t: &Tensor, _l: Option<&Tensor>| -> Result<Tensor> {
            Ok(Tensor::cat(&[x * 0.1, x.zeros_like()], 1))
        };
        let cfg = SchedulerConfig::default();
        let mut solver = by_name("euler", &cfg, 3, &SolverOptions::default()).unwrap();
        let x = Tensor::ones([1, 3, 2, 2], (Kind::Float, Device::Cpu));
        let out = sample(
            &model,
            solver.as_mut(),
            &x,
            &Conditioning::default(),
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(out.size(), [1, 3, 2, 2]);
        let bad = |x: &Tensor, _t: &Tensor, _l: Option<&Tensor>| -> Result<Tensor> {
            Ok(x.narrow(1, 0, 2))
        };
        let e = sample(
            &bad,
            solver.as_mut(),
            &x,
            &Conditioning::default(),
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected [1, 3 or 6"), "{e}");
    }
}
