//! Exponential moving average of the weights, with warm-up.
//!
//! The decay follows diffusers' `EMAModel` with `use_ema_warmup`:
//! `decay(step) = clamp(1 - (1 + step / inv_gamma)^-power, min_decay, max_decay)`,
//! zero (a plain copy) before `update_after_step`. Only trainable parameters
//! are averaged: buffers (anything registered without gradient, such as
//! schedule constants) are never touched, and the averaged weights are what
//! sampling, evaluation and the diffusers export use.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::{Error, Result};

/// EMA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    pub enabled: bool,
    pub inv_gamma: f64,
    pub power: f64,
    pub min_decay: f64,
    pub max_decay: f64,
    /// Copy the weights (decay 0) until this many optimiser steps have passed.
    pub update_after_step: u64,
}

impl Default for EmaConfig {
    fn default() -> Self {
        // diffusers' train_unconditional.py defaults, except max_decay, which
        // suits runs of thousands rather than hundreds of thousands of steps.
        EmaConfig {
            enabled: true,
            inv_gamma: 1.0,
            power: 0.75,
            min_decay: 0.0,
            max_decay: 0.999,
            update_after_step: 0,
        }
    }
}

impl EmaConfig {
    /// The decay applied at optimiser step `optimization_step` (1-based).
    pub fn decay(&self, optimization_step: u64) -> f64 {
        let step = optimization_step as f64 - self.update_after_step as f64 - 1.0;
        if step <= 0.0 {
            return 0.0;
        }
        let value = 1.0 - (1.0 + step / self.inv_gamma).powf(-self.power);
        value.clamp(self.min_decay, self.max_decay)
    }
}

/// Shadow copies of named trainable parameters.
#[derive(Debug)]
pub struct Ema {
    config: EmaConfig,
    /// (name, shadow) in the order of the parameters given to [`Ema::new`].
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts an average at the current values of `params`. Tensors that do
    /// not require gradients are buffers and are refused.
    pub fn new(params: &[(String, Tensor)], config: EmaConfig) -> Result<Self> {
        if let Some((name, _)) = params.iter().find(|(_, t)| !t.requires_grad()) {
            return Err(Error::Setting {
                key: name.clone(),
                reason: "is a buffer (no gradient); the EMA only averages trainable parameters"
                    .into(),
            });
        }
        let shadow = params
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().copy()))
            .collect();
        Ok(Ema { config, shadow })
    }

    /// Moves the average towards `params` after optimiser step `step`.
    pub fn update(&mut self, params: &[(String, Tensor)], step: u64) {
        let decay = self.config.decay(step);
        tch::no_grad(|| {
            for ((_, s), (_, p)) in self.shadow.iter_mut().zip(params) {
                let _ = s.lerp_(p, 1.0 - decay);
            }
        });
    }

    /// The averaged tensors by parameter name.
    pub fn shadow(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    /// Restores saved averages (by name).
    pub fn load(&mut self, saved: &std::collections::BTreeMap<String, Tensor>) -> Result<()> {
        tch::no_grad(|| {
            for (name, s) in &mut self.shadow {
                let src = saved.get(name).ok_or_else(|| Error::Setting {
                    key: format!("ema.{name}"),
                    reason: "missing from the checkpoint".into(),
                })?;
                s.f_copy_(src)?;
            }
            Ok(())
        })
    }

    /// Runs `f` with the averaged weights swapped into `params`, then swaps back.
    pub fn with_averaged<T>(&self, params: &[(String, Tensor)], f: impl FnOnce() -> T) -> T {
        let backup: Vec<Tensor> = params.iter().map(|(_, p)| p.detach().copy()).collect();
        tch::no_grad(|| {
            for ((_, p), (_, s)) in params.iter().zip(&self.shadow) {
                p.detach().copy_(s);
            }
        });
        let out = f();
        tch::no_grad(|| {
            for ((_, p), b) in params.iter().zip(&backup) {
                p.detach().copy_(b);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn decay_warms_up_to_its_cap() {
        let c = EmaConfig::default();
        assert_eq!(c.decay(1), 0.0);
        let d10 = c.decay(11);
        assert!((d10 - (1.0 - 11f64.powf(-0.75))).abs() < 1e-12);
        assert!(c.decay(100) > d10);
        assert_eq!(c.decay(10_000_000), 0.999);
    }

    #[test]
    fn averages_parameters_and_never_buffers() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = root.ones("w", &[2]);
        let _buffer = root.zeros_no_train("schedule_constants", &[3]);
        let all: Vec<(String, Tensor)> = {
            let mut v: Vec<_> = vs.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert!(Ema::new(&all, EmaConfig::default())
            .unwrap_err()
            .to_string()
            .contains("buffer"));
        let params: Vec<(String, Tensor)> =
            all.into_iter().filter(|(_, t)| t.requires_grad()).collect();
        assert_eq!(params.len(), 1);
        let mut ema = Ema::new(
            &params,
            EmaConfig {
                update_after_step: 0,
                ..Default::default()
            },
        )
        .unwrap();
        let _ = tch::no_grad(|| w.detach().fill_(3.0));
        ema.update(&params, 1); // decay 0: copies
        assert_eq!(ema.shadow()[0].1.double_value(&[0]), 3.0);
        let _ = tch::no_grad(|| w.detach().fill_(5.0));
        ema.update(&params, 2); // decay 1 - 2^-0.75
        let d = EmaConfig::default().decay(2);
        let want = 3.0 * d + 5.0 * (1.0 - d);
        assert!((ema.shadow()[0].1.double_value(&[0]) - want).abs() < 1e-5);
        let inside = ema.with_averaged(&params, || w.double_value(&[0]));
        assert!((inside - want).abs() < 1e-5);
        assert_eq!(w.double_value(&[0]), 5.0);
        let _ = Kind::Float;
    }
}
