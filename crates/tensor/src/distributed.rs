//! Multi-process collectives on PyTorch's own engine, c10d: Gloo for CPU
//! tensors, NCCL for CUDA tensors, rendezvous through a `TCPStore`, exactly
//! what `torch.distributed` and DDP run on.
//!
//! The C++ side is a small shim (`crates/tensor/csrc/`) compiled against the
//! libtorch headers by this crate's build script; every C++ exception is
//! caught there and comes back as [`Error::Distributed`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tensor::distributed::{Backend, ProcessGroup, ReduceOp};
//! use tch::{Device, Kind, Tensor};
//!
//! // Under `torchrun --nproc-per-node 2 ...`: MASTER_ADDR, MASTER_PORT, RANK,
//! // WORLD_SIZE are set.
//! let pg = ProcessGroup::from_env(Backend::Gloo, Duration::from_secs(60))?;
//! let grads = [Tensor::ones([3], (Kind::Float, Device::Cpu))];
//! pg.all_reduce(&grads, ReduceOp::Avg)?;
//! pg.broadcast(&grads, 0)?;
//! pg.barrier()?;
//! # Ok::<(), tensor::Error>(())
//! ```
//!
//! All ranks must issue the same collectives, on tensors of the same shapes
//! and dtypes, in the same order. A rank that dies makes the collectives of
//! the others fail (at once when its connections close, else after the
//! timeout): no call here blocks for longer than the group's timeout.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::str::FromStr;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// Default bucket size for [`ProcessGroup::all_reduce`] and
/// [`ProcessGroup::broadcast`], as in PyTorch DDP (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Added to the errors of collectives: what a failed one almost always means.
const PEER_HINT: &str = "another rank has probably exited, crashed or stopped answering";

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo, for CPU tensors.
    Gloo,
    /// NCCL, for CUDA tensors (when this build has it: [`has_nccl`]).
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`: NCCL for CUDA, Gloo otherwise.
    pub fn for_device(device: Device) -> Backend {
        match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }

    fn code(self) -> c_int {
        match self {
            Backend::Gloo => 0,
            Backend::Nccl => 1,
        }
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(setup_error(format!(
                "unknown backend {s:?}: expected gloo or nccl"
            ))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size.
    Avg,
}

/// Where and who this process is, as torchrun describes it in the
/// environment: `MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK` (defaults to `RANK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub addr: String,
    pub port: u16,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    /// `Some(prefix)` when torchrun's agent already hosts the `TCPStore` at
    /// `addr:port` (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank joins it
    /// as a client, under the key prefix `/worker/attempt_N` (N =
    /// `TORCHELASTIC_RESTART_COUNT`), as torch.distributed does. `None`:
    /// rank 0 hosts the store.
    pub agent_store: Option<String>,
}

impl Rendezvous {
    /// Reads the torchrun variables; `Ok(None)` when `WORLD_SIZE` is unset
    /// (a plain single process). A variable that is set but malformed, or
    /// missing while `WORLD_SIZE` is set, is an error naming it.
    pub fn from_env() -> Result<Option<Rendezvous>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any variable lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Rendezvous>> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        fn num<T: FromStr>(key: &str, v: Option<String>) -> Result<T> {
            let v = v.ok_or_else(|| {
                setup_error(format!(
                    "{key} is not set (WORLD_SIZE is: torchrun sets both)"
                ))
            })?;
            v.trim()
                .parse()
                .map_err(|_| setup_error(format!("{key}={v:?} is not a valid number")))
        }
        let world_size: usize = num("WORLD_SIZE", Some(world))?;
        let rank: usize = num("RANK", var("RANK"))?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", Some(v))?,
            None => rank,
        };
        let addr = var("MASTER_ADDR").ok_or_else(|| {
            setup_error("MASTER_ADDR is not set (WORLD_SIZE is: torchrun sets both)".into())
        })?;
        let port: u16 = num("MASTER_PORT", var("MASTER_PORT"))?;
        if world_size == 0 || rank >= world_size {
            return Err(setup_error(format!(
                "RANK={rank} is not below WORLD_SIZE={world_size}"
            )));
        }
        let agent_store =
            (var("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True")).then(|| {
                let attempt = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
                format!("/worker/attempt_{}", attempt.trim())
            });
        Ok(Some(Rendezvous {
            addr,
            port,
            rank,
            world_size,
            local_rank,
            agent_store,
        }))
    }
}

/// Whether this build has the c10d shim (it needs libtorch's headers at
/// build time).
pub fn available() -> bool {
    cfg!(lmzh_c10d)
}

/// Whether this build can create NCCL groups.
pub fn has_nccl() -> bool {
    #[cfg(lmzh_c10d)]
    {
        // SAFETY: no arguments, no state.
        unsafe { ffi::lmzh_c10d_has_nccl() != 0 }
    }
    #[cfg(not(lmzh_c10d))]
    {
        false
    }
}

/// A c10d process group (and the TCPStore it met through). Dropping it shuts
/// the backend down; every rank should drop it at about the same point.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: NonNull<c_void>,
    rank: usize,
    world_size: usize,
    backend: Backend,
    timeout: Duration,
    bucket_bytes: usize,
}

// SAFETY: the c10d backend may be driven from any thread (it queues work on
// its own threads); `&self` methods are not `Sync`-safe in the sense that
// collectives must be issued in one order, so the group is `Send` only.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Meets the other ranks through a `TCPStore` at `addr:port` (rank 0
    /// hosts it) and creates the group. Waits at most `timeout` for all
    /// `world_size` ranks; the same timeout bounds every later collective.
    pub fn new(
        addr: &str,
        port: u16,
        rank: usize,
        world_size: usize,
        backend: Backend,
        timeout: Duration,
    ) -> Result<ProcessGroup> {
        let r = Rendezvous {
            addr: addr.to_string(),
            port,
            rank,
            world_size,
            local_rank: rank,
            agent_store: None,
        };
        Self::join(&r, backend, timeout)
    }

    /// [`Self::new`] as `r` describes it (including torchrun's agent store).
    pub fn join(r: &Rendezvous, backend: Backend, timeout: Duration) -> Result<ProcessGroup> {
        let (addr, port, rank, world_size) = (r.addr.as_str(), r.port, r.rank, r.world_size);
        let fail = |reason: String| Error::Distributed {
            op: "init",
            rank,
            world_size,
            reason,
        };
        if world_size == 0 || rank >= world_size {
            return Err(fail(format!(
                "rank {rank} is not below world size {world_size}"
            )));
        }
        let to_int = |v: usize, what: &str| {
            c_int::try_from(v).map_err(|_| fail(format!("{what} {v} is too large")))
        };
        let (rank_c, world_c) = (to_int(rank, "rank")?, to_int(world_size, "world size")?);
        let ms = i64::try_from(timeout.as_millis().max(1)).unwrap_or(i64::MAX);
        let host = CString::new(addr).map_err(|_| fail(format!("address {addr:?} has a NUL")))?;
        let prefix = r
            .agent_store
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| fail("store prefix has a NUL".into()))?;
        let raw = imp::create(
            &host,
            port,
            rank_c,
            world_c,
            backend.code(),
            ms,
            prefix.as_deref(),
        )
        .map_err(|e| fail(format!("rendezvous at {addr}:{port} ({backend}): {e}")))?;
        tracing::debug!(rank, world_size, %backend, addr, port, "process group ready");
        Ok(ProcessGroup {
            raw,
            rank,
            world_size,
            backend,
            timeout,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        })
    }

    /// [`Self::new`] from torchrun's environment ([`Rendezvous::from_env`]);
    /// an error if `WORLD_SIZE` is not set.
    pub fn from_env(backend: Backend, timeout: Duration) -> Result<ProcessGroup> {
        let r = Rendezvous::from_env()?.ok_or_else(|| {
            setup_error(
                "WORLD_SIZE is not set: start under torchrun or `lmzh train --nproc N`".into(),
            )
        })?;
        Self::join(&r, backend, timeout)
    }

    /// Sets the bucket size of [`Self::all_reduce`] / [`Self::broadcast`]
    /// (at least one tensor goes in each bucket).
    pub fn with_bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes.max(1);
        self
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reduces `tensors` across all ranks, in place. Tensors are packed into
    /// flat buckets of about the bucket size (per dtype and device, in
    /// order), all buckets are in flight at once, and the results are copied
    /// back. Undefined tensors are an error.
    pub fn all_reduce(&self, tensors: &[Tensor], op: ReduceOp) -> Result<()> {
        let code = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Avg => 1,
        };
        self.bucketed("all_reduce", tensors, |flat| {
            imp::all_reduce(self.raw, flat, code)
        })
    }

    /// Overwrites `tensors` on every rank with rank `root`'s, in place
    /// (bucketed as [`Self::all_reduce`]).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(self.error("broadcast", format!("root {root} is not a rank")));
        }
        let root = root as c_int;
        self.bucketed("broadcast", tensors, |flat| {
            imp::broadcast(self.raw, flat, root)
        })
    }

    /// Returns once every rank has called it (or fails after the timeout).
    pub fn barrier(&self) -> Result<()> {
        imp::barrier(self.raw).map_err(|e| self.error("barrier", format!("{e} ({PEER_HINT})")))
    }

    fn error(&self, op: &'static str, reason: String) -> Error {
        Error::Distributed {
            op,
            rank: self.rank,
            world_size: self.world_size,
            reason,
        }
    }

    /// Packs `tensors` into buckets, runs `run` on the flat buckets, and
    /// copies the results back.
    fn bucketed(
        &self,
        op: &'static str,
        tensors: &[Tensor],
        run: impl FnOnce(&[Tensor]) -> std::result::Result<(), String>,
    ) -> Result<()> {
        if let Some(i) = tensors.iter().position(|t| !t.defined()) {
            return Err(self.error(op, format!("tensor {i} of {} is undefined", tensors.len())));
        }
        let buckets = plan_buckets(tensors, self.bucket_bytes);
        tch::no_grad(|| {
            let flat: Vec<Tensor> = buckets
                .iter()
                .map(|b| match b.as_slice() {
                    // One contiguous tensor: reduced where it lies.
                    [i] if tensors[*i].is_contiguous() => Ok(tensors[*i].shallow_clone()),
                    ids => {
                        let parts: Vec<Tensor> =
                            ids.iter().map(|&i| tensors[i].reshape([-1])).collect();
                        Ok(Tensor::f_cat(&parts, 0)?)
                    }
                })
                .collect::<Result<_>>()?;
            run(&flat).map_err(|e| self.error(op, format!("{e} ({PEER_HINT})")))?;
            for (b, f) in buckets.iter().zip(&flat) {
                if let [i] = b.as_slice() {
                    if tensors[*i].is_contiguous() {
                        continue;
                    }
                }
                let mut offset = 0;
                for &i in b {
                    let t = &tensors[i];
                    let n = t.numel() as i64;
                    t.shallow_clone()
                        .f_copy_(&f.narrow(0, offset, n).view_as(t))?;
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        imp::free(self.raw);
    }
}

/// How [`ProcessGroup::all_reduce`] and [`ProcessGroup::broadcast`] group
/// `tensors`: lists of indices, each a bucket of one dtype and device of at
/// most `cap` bytes (a larger tensor gets a bucket of its own), in order
/// within each (dtype, device).
pub fn plan_buckets(tensors: &[Tensor], cap: usize) -> Vec<Vec<usize>> {
    let mut open: Vec<((Kind, Device), Vec<usize>, usize)> = Vec::new();
    let mut done = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let key = (t.kind(), t.device());
        let bytes = t.numel() * t.kind().elt_size_in_bytes();
        let slot = match open.iter().position(|(k, _, _)| *k == key) {
            Some(s) => s,
            None => {
                open.push((key, Vec::new(), 0));
                open.len() - 1
            }
        };
        let (_, ids, size) = &mut open[slot];
        if !ids.is_empty() && *size + bytes > cap {
            done.push(std::mem::take(ids));
            *size = 0;
        }
        ids.push(i);
        *size += bytes;
    }
    done.extend(
        open.into_iter()
            .map(|(_, ids, _)| ids)
            .filter(|b| !b.is_empty()),
    );
    done
}

fn setup_error(reason: String) -> Error {
    Error::Distributed {
        op: "setup",
        rank: 0,
        world_size: 0,
        reason,
    }
}

#[cfg(lmzh_c10d)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    extern "C" {
        pub fn lmzh_c10d_new(
            host: *const c_char,
            port: u16,
            rank: c_int,
            world: c_int,
            backend: c_int,
            timeout_ms: i64,
            host_store: c_int,
            prefix: *const c_char,
            err: *mut *mut c_char,
        ) -> *mut c_void;
        pub fn lmzh_c10d_allreduce(
            group: *mut c_void,
            tensors: *const *mut c_void,
            n: usize,
            op: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn lmzh_c10d_broadcast(
            group: *mut c_void,
            tensors: *const *mut c_void,
            n: usize,
            root: c_int,
            err: *mut *mut c_char,
        ) -> c_int;
        pub fn lmzh_c10d_barrier(group: *mut c_void, err: *mut *mut c_char) -> c_int;
        pub fn lmzh_c10d_free(group: *mut c_void);
        pub fn lmzh_c10d_free_error(err: *mut c_char);
        pub fn lmzh_c10d_has_nccl() -> c_int;
    }
}

/// Takes ownership of a shim error string.
#[cfg_attr(not(lmzh_c10d), allow(dead_code))]
fn take_error(err: *mut c_char) -> String {
    if err.is_null() {
        return "unknown error (no message)".into();
    }
    // SAFETY: the shim returns a NUL-terminated malloc'd string, freed here once.
    unsafe {
        let s = CStr::from_ptr(err).to_string_lossy().into_owned();
        #[cfg(lmzh_c10d)]
        ffi::lmzh_c10d_free_error(err);
        s
    }
}

#[cfg(lmzh_c10d)]
mod imp {
    use super::*;

    fn ptrs(tensors: &[Tensor]) -> Vec<*mut c_void> {
        // tch's C_tensor is an `at::Tensor*`; the shim copies the handle.
        tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
    }

    pub fn create(
        host: &CStr,
        port: u16,
        rank: c_int,
        world: c_int,
        backend: c_int,
        timeout_ms: i64,
        agent_prefix: Option<&CStr>,
    ) -> std::result::Result<NonNull<c_void>, String> {
        let mut err = std::ptr::null_mut();
        let (host_store, prefix) = match agent_prefix {
            Some(p) => (0, p.as_ptr()),
            None => (1, std::ptr::null()),
        };
        // SAFETY: valid C strings (or a NULL prefix); `err` is written only on failure.
        let raw = unsafe {
            ffi::lmzh_c10d_new(
                host.as_ptr(),
                port,
                rank,
                world,
                backend,
                timeout_ms,
                host_store,
                prefix,
                &mut err,
            )
        };
        NonNull::new(raw).ok_or_else(|| take_error(err))
    }

    pub fn all_reduce(
        raw: NonNull<c_void>,
        tensors: &[Tensor],
        op: c_int,
    ) -> std::result::Result<(), String> {
        let p = ptrs(tensors);
        let mut err = std::ptr::null_mut();
        // SAFETY: `p` holds live tensor handles for the duration of the call.
        let rc =
            unsafe { ffi::lmzh_c10d_allreduce(raw.as_ptr(), p.as_ptr(), p.len(), op, &mut err) };
        if rc == 0 {
            Ok(())
        } else {
            Err(take_error(err))
        }
    }

    pub fn broadcast(
        raw: NonNull<c_void>,
        tensors: &[Tensor],
        root: c_int,
    ) -> std::result::Result<(), String> {
        let p = ptrs(tensors);
        let mut err = std::ptr::null_mut();
        // SAFETY: as in `all_reduce`.
        let rc =
            unsafe { ffi::lmzh_c10d_broadcast(raw.as_ptr(), p.as_ptr(), p.len(), root, &mut err) };
        if rc == 0 {
            Ok(())
        } else {
            Err(take_error(err))
        }
    }

    pub fn barrier(raw: NonNull<c_void>) -> std::result::Result<(), String> {
        let mut err = std::ptr::null_mut();
        // SAFETY: a live group.
        let rc = unsafe { ffi::lmzh_c10d_barrier(raw.as_ptr(), &mut err) };
        if rc == 0 {
            Ok(())
        } else {
            Err(take_error(err))
        }
    }

    pub fn free(raw: NonNull<c_void>) {
        // SAFETY: called once, from Drop.
        unsafe { ffi::lmzh_c10d_free(raw.as_ptr()) }
    }
}

#[cfg(not(lmzh_c10d))]
mod imp {
    use super::*;

    const MISSING: &str = "this build has no c10d: libtorch's headers were not found when the \
                           tensor crate was built (run `cargo xtask setup`, then rebuild)";

    pub fn create(
        _: &CStr,
        _: u16,
        _: c_int,
        _: c_int,
        _: c_int,
        _: i64,
        _: Option<&CStr>,
    ) -> std::result::Result<NonNull<c_void>, String> {
        Err(MISSING.into())
    }

    pub fn all_reduce(
        _: NonNull<c_void>,
        _: &[Tensor],
        _: c_int,
    ) -> std::result::Result<(), String> {
        Err(MISSING.into())
    }

    pub fn broadcast(
        _: NonNull<c_void>,
        _: &[Tensor],
        _: c_int,
    ) -> std::result::Result<(), String> {
        Err(MISSING.into())
    }

    pub fn barrier(_: NonNull<c_void>) -> std::result::Result<(), String> {
        Err(MISSING.into())
    }

    pub fn free(_: NonNull<c_void>) {}
}
