//! AdamW whose whole state is ordinary named tensors, so that a checkpoint
//! holds it exactly and a resumed run continues bit-identically; gradient
//! clipping by global norm; the learning-rate schedule.
//!
//! The update is PyTorch's `torch.optim.AdamW` (decoupled weight decay,
//! bias-corrected moments, `eps` added after the square root).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    pub max_grad_norm: f64,
    /// Steps of linear warm-up from 0 to `learning_rate`.
    pub warmup_steps: u64,
    /// What follows the warm-up.
    pub decay: Decay,
    /// Floor of the cosine and linear decays, as a fraction of the peak.
    pub min_lr_ratio: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            learning_rate: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            max_grad_norm: 1.0,
            warmup_steps: 500,
            decay: Decay::Cosine,
            min_lr_ratio: 0.0,
        }
    }
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Constant,
    Cosine,
    Linear,
}

impl OptimConfig {
    /// The learning rate of step `step` (0-based) of a run of `total` steps.
    pub fn lr_at(&self, step: u64, total: u64) -> f64 {
        let peak = self.learning_rate;
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = peak * self.min_lr_ratio;
        match self.decay {
            Decay::Constant => peak,
            Decay::Linear => floor + (peak - floor) * (1.0 - progress),
            Decay::Cosine => {
                floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// Checks ranges serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, reason: &str| {
            Err(Error::Setting {
                key: format!("optim.{key}"),
                reason: reason.to_string(),
            })
        };
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1/beta2", "must lie in [0, 1)");
        }
        if self.eps <= 0.0 || self.weight_decay < 0.0 || self.max_grad_norm < 0.0 {
            return bad(
                "eps/weight_decay/max_grad_norm",
                "eps must be > 0, the others >= 0",
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad("min_lr_ratio", "must lie in [0, 1]");
        }
        Ok(())
    }
}

/// AdamW over named parameters.
#[derive(Debug)]
pub struct AdamW {
    config: OptimConfig,
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Optimiser steps taken (PyTorch's per-parameter `step`, shared here).
    pub step: u64,
}

impl AdamW {
    /// An optimiser for `params` (name, trainable tensor), in the given order.
    pub fn new(params: Vec<(String, Tensor)>, config: OptimConfig) -> Result<Self> {
        config.validate()?;
        let exp_avg = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let exp_avg_sq = params.iter().map(|(_, p)| p.zeros_like()).collect();
        Ok(AdamW {
            config,
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
        })
    }

    /// The parameters being optimised.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// The global L2 norm of all gradients, as a 0-dim f32 tensor (no host sync).
    pub fn grad_norm(&self) -> Tensor {
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
            .collect();
        if norms.is_empty() {
            return Tensor::from(0f32);
        }
        Tensor::stack(&norms, 0).sum(Kind::Float).sqrt()
    }

    /// Scales gradients so that their global norm is at most `max_grad_norm`,
    /// as `torch.nn.utils.clip_grad_norm_` does; `norm` is [`Self::grad_norm`].
    pub fn clip_grad_norm(&mut self, norm: &Tensor) {
        if self.config.max_grad_norm <= 0.0 {
            return;
        }
        let coef = (norm + 1e-6).reciprocal() * self.config.max_grad_norm;
        let coef = coef.clamp_max(1.0);
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.g_mul_(&coef);
            }
        }
    }

    /// One AdamW update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = &self.config;
        let bias1 = 1.0 - c.beta1.powi(self.step as i32);
        let bias2 = 1.0 - c.beta2.powi(self.step as i32);
        let step_size = lr / bias1;
        let bias2_sqrt = bias2.sqrt();
        tch::no_grad(|| {
            for (i, (_, p)) in self.params.iter_mut().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                if c.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let m = &mut self.exp_avg[i];
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let v = &mut self.exp_avg_sq[i];
                let _ = v
                    .g_mul_scalar_(c.beta2)
                    .addcmul_(&g, &g.g_mul_scalar(1.0 - c.beta2));
                let denom = v.sqrt() / bias2_sqrt + c.eps;
                let _ = p.addcdiv_(m, &(denom / -step_size));
            }
        });
    }

    /// The state as named tensors: `exp_avg.NAME`, `exp_avg_sq.NAME`.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.insert(format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone());
            out.insert(
                format!("exp_avg_sq.{name}"),
                self.exp_avg_sq[i].shallow_clone(),
            );
        }
        out
    }

    /// Restores [`Self::state`] (copying values in place).
    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (i, (name, _)) in self.params.iter().enumerate() {
                for (prefix, dst) in [
                    ("exp_avg", &mut self.exp_avg[i]),
                    ("exp_avg_sq", &mut self.exp_avg_sq[i]),
                ] {
                    let key = format!("{prefix}.{name}");
                    let src = state.get(&key).ok_or_else(|| Error::Setting {
                        key: key.clone(),
                        reason: "missing from the checkpoint's optimiser state".into(),
                    })?;
                    if src.size() != dst.size() {
                        return Err(Error::Setting {
                            key,
                            reason: format!("shape {:?}, expected {:?}", src.size(), dst.size()),
                        });
                    }
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, nn::OptimizerConfig, Device};

    #[test]
    fn warmup_then_decays() {
        let c = OptimConfig {
            learning_rate: 1.0,
            warmup_steps: 10,
            ..Default::default()
        };
        assert!((c.lr_at(0, 110) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9, 110) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(60, 110) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(110, 110).abs() < 1e-12);
        let lin = OptimConfig {
            decay: Decay::Linear,
            min_lr_ratio: 0.1,
            ..c.clone()
        };
        assert!((lin.lr_at(110, 110) - 0.1).abs() < 1e-12);
        let k = OptimConfig {
            decay: Decay::Constant,
            ..c
        };
        assert_eq!(k.lr_at(100, 110), 1.0);
    }

    /// Our AdamW follows tch's (libtorch's) AdamW to float precision.
    #[test]
    fn matches_libtorch_adamw() {
        tensor::seed::seed_everything(0);
        let cfg = OptimConfig {
            learning_rate: 1e-2,
            weight_decay: 0.1,
            max_grad_norm: 0.0,
            ..Default::default()
        };
        let init = Tensor::randn([5, 3], (Kind::Float, Device::Cpu));
        let x = Tensor::randn([7, 5], (Kind::Float, Device::Cpu));
        let loss_of = |w: &Tensor| x.matmul(w).tanh().square().sum(Kind::Float);

        let ours = init.copy().set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), ours.shallow_clone())], cfg.clone()).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let theirs = vs.root().var_copy("w", &init);
        let mut reference = nn::AdamW {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            wd: cfg.weight_decay,
            eps: cfg.eps,
            amsgrad: false,
        }
        .build(&vs, cfg.learning_rate)
        .unwrap();
        for _ in 0..20 {
            opt.zero_grad();
            loss_of(&ours).backward();
            opt.step(cfg.learning_rate);
            reference.backward_step(&loss_of(&theirs));
        }
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "max difference {diff}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let p = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let cfg = OptimConfig {
            max_grad_norm: 1.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], cfg).unwrap();
        (&p * 10.0).sum(Kind::Float).backward();
        let norm = opt.grad_norm();
        assert!((norm.double_value(&[]) - 20.0).abs() < 1e-4);
        opt.clip_grad_norm(&norm);
        assert!((opt.grad_norm().double_value(&[]) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn state_round_trips() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut a = AdamW::new(
            vec![("p".into(), p.shallow_clone())],
            OptimConfig::default(),
        )
        .unwrap();
        (&p * &p).sum(Kind::Float).backward();
        a.step(1e-3);
        let state = a.state();
        let q = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut b = AdamW::new(vec![("p".into(), q)], OptimConfig::default()).unwrap();
        b.load_state(&state, a.step).unwrap();
        assert_eq!(b.step, 1);
        assert!(b.state()["exp_avg.p"].equal(&state["exp_avg.p"]));
        let r = Tensor::ones([4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut c = AdamW::new(vec![("p".into(), r)], OptimConfig::default()).unwrap();
        assert!(c
            .load_state(&state, 1)
            .unwrap_err()
            .to_string()
            .contains("shape"));
    }
}
