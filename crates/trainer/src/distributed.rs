//! Data-parallel training over several processes, on c10d (Gloo on the CPU,
//! NCCL on CUDA) through [`tensor::distributed`].
//!
//! A process learns its place from torchrun's variables (`MASTER_ADDR`,
//! `MASTER_PORT`, `RANK`, `WORLD_SIZE`, `LOCAL_RANK`), set by `torchrun
//! --nproc-per-node N target/release/trainer ...` or by our own launcher,
//! `lmzh train --nproc N` (`trainer::launch::launch_local`, feature `cli`). Then, as PyTorch DDP does:
//!
//! - rank 0's parameters, EMA and optimiser state are broadcast at the start
//!   (fresh or resumed), so every replica starts identical;
//! - each rank reads its own slice of every global batch
//!   ([`data_pipeline::loader::Shard`]): `batch_size` is per process, the
//!   global batch is `batch_size x processes x grad_accum`;
//! - after the backward passes of a step, the gradients (and the loss) are
//!   averaged in ~25 MB buckets (tch exposes no autograd hooks, so they are
//!   not overlapped with the backward pass), and every rank takes the same
//!   AdamW step;
//! - the random numbers of micro-batch `g` of a step (`g = accumulation index
//!   x processes + rank`) come from (seed, step, g), so `N` processes equal
//!   one process with `grad_accum = N` on the same batches, to float
//!   rounding;
//! - only rank 0 writes the run folder (config, metrics, samples,
//!   checkpoints, export); the replicas are compared bit for bit at every
//!   checkpoint and at the end;
//! - a rank that dies makes the others fail within the timeout (at once when
//!   its connections close), with an error naming the collective, so no rank
//!   hangs; checkpoints are written atomically, so the last one stays valid.
//!   A checkpoint resumes with any number of processes (positions in the
//!   data are global).

use std::time::Duration;

use data_pipeline::loader::Shard;
use tch::{Device, Kind, Tensor};
use tensor::distributed::{Backend, ProcessGroup, ReduceOp, Rendezvous};

use crate::Result;

/// Default collective timeout: long enough for rank 0 to sample, evaluate and
/// write a checkpoint while the others wait at the next step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How to join a multi-process run.
#[derive(Debug, Clone)]
pub struct DistOptions {
    /// Bounds the rendezvous and every collective: a rank that stops
    /// answering makes the others fail after at most this long.
    pub timeout: Duration,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions {
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// This process's part in a run: a single process, or one rank of a group.
#[derive(Debug)]
pub struct Dist {
    group: Option<ProcessGroup>,
    rank: usize,
    world_size: usize,
    local_rank: usize,
}

impl Dist {
    /// A plain single-process run.
    pub fn single() -> Dist {
        Dist {
            group: None,
            rank: 0,
            world_size: 1,
            local_rank: 0,
        }
    }

    /// Joins the group torchrun's variables describe (a single process when
    /// `WORLD_SIZE` is unset or 1). `device` picks the backend: NCCL for
    /// CUDA, where each rank uses `cuda:LOCAL_RANK` ([`Self::device`]).
    pub fn from_env(opts: &DistOptions, device: Device) -> Result<Dist> {
        let Some(r) = Rendezvous::from_env()? else {
            return Ok(Dist::single());
        };
        if r.world_size == 1 {
            return Ok(Dist::single());
        }
        let backend = Backend::for_device(device);
        let group = ProcessGroup::join(&r, backend, opts.timeout)?;
        tracing::info!(
            rank = r.rank,
            world_size = r.world_size,
            %backend,
            "joined the process group at {}:{}",
            r.addr,
            r.port
        );
        Ok(Dist {
            group: Some(group),
            rank: r.rank,
            world_size: r.world_size,
            local_rank: r.local_rank,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Rank 0: the one process that writes files.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The device this rank trains on: `cuda:LOCAL_RANK` for a CUDA run with
    /// several processes, `device` otherwise.
    pub fn device(&self, device: Device) -> Device {
        match device {
            Device::Cuda(_) if self.world_size > 1 => Device::Cuda(self.local_rank),
            d => d,
        }
    }

    /// The loader shard of this rank.
    pub fn shard(&self) -> Shard {
        Shard {
            rank: self.rank,
            count: self.world_size,
        }
    }

    /// Index of micro-batch `k` of a step among all ranks' micro-batches, in
    /// the order one process with `grad_accum * world_size` would read them.
    pub fn micro_batch(&self, k: usize) -> usize {
        k * self.world_size + self.rank
    }

    /// Makes every rank's `tensors` equal to rank 0's.
    pub fn broadcast_from_main(&self, tensors: &[Tensor]) -> Result<()> {
        if let Some(g) = &self.group {
            g.broadcast(tensors, 0)?;
        }
        Ok(())
    }

    /// Averages `tensors` (gradients, the loss) over the ranks, in place.
    pub fn average(&self, tensors: &[Tensor]) -> Result<()> {
        if let Some(g) = &self.group {
            g.all_reduce(tensors, ReduceOp::Avg)?;
        }
        Ok(())
    }

    /// True on every rank when `flag` is true on any.
    pub fn any(&self, flag: bool) -> Result<bool> {
        let Some(g) = &self.group else {
            return Ok(flag);
        };
        let t = Tensor::from_slice(&[f32::from(u8::from(flag))]).to_device(self.comm_device());
        g.all_reduce(&[t.shallow_clone()], ReduceOp::Sum)?;
        Ok(t.double_value(&[0]) > 0.0)
    }

    /// Checks that every rank holds bit-identical `params` (compared with
    /// rank 0's); returns their digest ([`digest`]).
    pub fn check_replicas(&self, params: &[(String, Tensor)]) -> Result<u64> {
        let mine = digest(params);
        let Some(g) = &self.group else {
            return Ok(mine);
        };
        let flat = Tensor::cat(
            &params
                .iter()
                .map(|(_, p)| p.detach().to_kind(Kind::Float).reshape([-1]))
                .collect::<Vec<_>>(),
            0,
        );
        let theirs = flat.copy();
        g.broadcast(&[theirs.shallow_clone()], 0)?;
        let differs = !theirs.equal(&flat);
        if self.any(differs)? {
            return Err(tensor::Error::Distributed {
                op: "replica check",
                rank: self.rank,
                world_size: self.world_size,
                reason: format!(
                    "the replicas diverged: this rank's parameters {} rank 0's",
                    if differs { "differ from" } else { "equal" }
                ),
            }
            .into());
        }
        Ok(mine)
    }

    fn comm_device(&self) -> Device {
        match self.group.as_ref().map(ProcessGroup::backend) {
            Some(Backend::Nccl) => Device::Cuda(self.local_rank),
            _ => Device::Cpu,
        }
    }
}

/// FNV-1a over the bytes of `params` (in the given order): equal digests on
/// two ranks mean bit-identical parameters.
pub fn digest(params: &[(String, Tensor)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, p) in params {
        let t = p.detach().to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, t.numel());
        for b in name.bytes().chain(bytes) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_is_its_own_group() {
        let d = Dist::single();
        assert!(d.is_main() && d.world_size() == 1 && d.micro_batch(3) == 3);
        assert!(d.any(true).unwrap() && !d.any(false).unwrap());
        let p = vec![("w".to_string(), Tensor::from_slice(&[1f32, 2.0]))];
        assert_eq!(d.check_replicas(&p).unwrap(), digest(&p));
        let q = vec![("w".to_string(), Tensor::from_slice(&[1f32, 2.5]))];
        assert_ne!(digest(&p), digest(&q));
    }
}
