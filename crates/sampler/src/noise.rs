//! Where the stochastic solvers (DDPM, DDIM with eta > 0, Euler ancestral)
//! get their Gaussian noise.
//!
//! [`TorchRng`] draws from libtorch's global CPU generator (seed it with
//! [`tensor::seed::seed_everything`]) and moves the draw to the sample's
//! device, so a seed gives the same noise on every device, as diffusers'
//! pipelines do with a CPU `torch.Generator`. [`ReplayNoise`] hands out
//! recorded draws in order (parity tests against recorded trajectories).

use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// A source of standard-normal tensors.
pub trait NoiseSource {
    /// A standard-normal tensor of `shape` and `kind` on `device`.
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor>;
}

/// libtorch's global CPU generator.
#[derive(Debug, Default, Clone, Copy)]
pub struct TorchRng;

impl NoiseSource for TorchRng {
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        Ok(Tensor::f_randn(shape, (kind, Device::Cpu))?.f_to_device(device)?)
    }
}

/// Recorded draws, handed out in order; asking for more than were recorded,
/// or for another shape, is an error.
#[derive(Debug)]
pub struct ReplayNoise {
    draws: VecDeque<Tensor>,
}

impl ReplayNoise {
    /// The draws are the slices of `stacked` along its first dimension.
    pub fn new(stacked: &Tensor) -> Self {
        let n = stacked.size().first().copied().unwrap_or(0);
        ReplayNoise {
            draws: (0..n).map(|i| stacked.get(i)).collect(),
        }
    }

    /// How many draws are left.
    pub fn remaining(&self) -> usize {
        self.draws.len()
    }
}

impl NoiseSource for ReplayNoise {
    fn randn(&mut self, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        let t = self
            .draws
            .pop_front()
            .ok_or_else(|| Error::Step("the recorded noise is exhausted".into()))?;
        if t.size() != shape {
            return Err(Error::Shape(format!(
                "recorded noise has shape {:?}, the step asks for {shape:?}",
                t.size()
            )));
        }
        Ok(t.f_to_kind(kind)?.f_to_device(device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_in_order_then_exhausted() {
        let stacked = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([3, 2]);
        let mut r = ReplayNoise::new(&stacked);
        let a = r.randn(&[2], Kind::Float, Device::Cpu).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), vec![0.0, 1.0]);
        assert!(r.randn(&[3], Kind::Float, Device::Cpu).is_err());
        assert_eq!(r.remaining(), 1);
        let _ = r.randn(&[2], Kind::Float, Device::Cpu).unwrap();
        assert!(r.randn(&[2], Kind::Float, Device::Cpu).is_err());
    }
}
