//! The reverse process: one loop for every [`Solver`] and every
//! [`Denoiser`], with classifier-free guidance on any conditioning (see
//! [`crate::guidance`]).
//!
//! ```text
//! x = x_T * init_noise_sigma
//! for i in 0..timesteps.len():
//!     out = model(scale_model_input(x, i), t_i, cond)   // guided: both branches
//!     x = step(out, i, x).prev_sample
//! ```

use tch::{Kind, Tensor};

use crate::denoiser::Denoiser;
use crate::guidance::{Conditioning, Guided};
use crate::noise::NoiseSource;
use crate::solver::{model_timesteps, Solver, StepIndex};
use crate::{Error, Result};

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
    model: &dyn Denoiser,
    solver: &mut dyn Solver,
    x_t: &Tensor,
    conditioning: &Conditioning,
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
    model: &dyn Denoiser,
    solver: &mut dyn Solver,
    x: &Tensor,
    start: usize,
    conditioning: &Conditioning,
    noise: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
) -> Result<Tensor> {
    sample_from_with(
        model,
        solver,
        x,
        start,
        conditioning,
        noise,
        progress,
        &mut |_, x| Ok(x),
    )
}

/// [`sample_from`] with `after_step(i, x)` applied to the sample after the
/// step at position `i` (before `progress` sees it): the hook of latent
/// inpainting, which puts the known region back after every step.
#[allow(clippy::too_many_arguments)]
pub fn sample_from_with(
    model: &dyn Denoiser,
    solver: &mut dyn Solver,
    x: &Tensor,
    start: usize,
    conditioning: &Conditioning,
    noise: &mut dyn NoiseSource,
    progress: &mut dyn FnMut(&StepInfo<'_>),
    after_step: &mut dyn FnMut(usize, Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let guided = Guided::new(conditioning, &x.size(), x.device())?;
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
        x = after_step(i, step.prev_sample)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denoiser::Cond;
    use crate::factory::{by_name, SolverOptions};
    use crate::guidance::guide;
    use crate::noise::TorchRng;
    use schedule::SchedulerConfig;
    use std::cell::RefCell;
    use tch::Device;

    #[test]
    fn guidance_batches_cond_and_uncond_together() {
        let calls = RefCell::new(Vec::new());
        // A "model" whose output depends on the label: x * (1 + label).
        let model = |x: &Tensor, _t: &Tensor, c: &Cond| -> Result<Tensor> {
            let l = c.class_labels.as_ref().unwrap();
            calls.borrow_mut().push(Vec::<i64>::try_from(l).unwrap());
            Ok(x * (l.to_kind(Kind::Float) + 1.0).reshape([-1, 1, 1, 1]) * 0.1)
        };
        let cfg = SchedulerConfig::default();
        let mut solver = by_name("ddim", &cfg, 2, &SolverOptions::default()).unwrap();
        let x = Tensor::ones([2, 1, 2, 2], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 2]);
        let cond = Conditioning::class(Some(labels), 3.0, Some(9)).unwrap();
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
        // Labels for a batch of another size are an error.
        let three =
            Conditioning::class(Some(Tensor::from_slice(&[1i64, 2, 3])), 3.0, Some(9)).unwrap();
        let e = sample(
            &model,
            solver.as_mut(),
            &x,
            &three,
            &mut TorchRng,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("[2]"), "{e}");
    }

    #[test]
    fn variance_channels_are_dropped_for_solvers_without_them() {
        let model = |x: &Tensor, _t: &Tensor, _c: &Cond| -> Result<Tensor> {
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
        let bad = |x: &Tensor, _t: &Tensor, _c: &Cond| -> Result<Tensor> { Ok(x.narrow(1, 0, 2)) };
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
