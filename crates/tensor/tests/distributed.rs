//! c10d collectives across real processes on loopback: this test binary
//! re-runs itself as the ranks (the `rank` test, ignored unless
//! `LMZH_TEST_SCENARIO` is set), with a free port and a watchdog that kills
//! every child on failure, so no test can hang.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use tensor::distributed::{Backend, ProcessGroup, ReduceOp, Rendezvous};

/// Collective timeout inside the children: generous, as a loaded CI machine
/// may start the two ranks seconds apart.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of the scenario that waits for it to expire.
const SHORT_TIMEOUT: Duration = Duration::from_secs(6);
/// How long the parent lets a child run before killing it.
const WATCHDOG: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills its children when dropped (a failing assertion included).
struct Ranks(Vec<Child>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Ranks {
    fn spawn(scenario: &str, world: usize) -> Ranks {
        let port = free_port().to_string();
        let exe = std::env::current_exe().unwrap();
        let children = (0..world)
            .map(|rank| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "rank",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("LMZH_TEST_SCENARIO", scenario)
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("RANK", rank.to_string())
                    .env("WORLD_SIZE", world.to_string())
                    .env("OMP_NUM_THREADS", "1")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        Ranks(children)
    }

    /// Waits for rank `i`, killing it after the watchdog; returns its status,
    /// the time it took and its output.
    fn wait(&mut self, i: usize, started: Instant) -> (ExitStatus, Duration, String) {
        let child = &mut self.0[i];
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut out);
                }
                return (status, started.elapsed(), out);
            }
            assert!(
                started.elapsed() < WATCHDOG,
                "rank {i} still running after {WATCHDOG:?}: killed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn cpu(values: &[f32]) -> Tensor {
    Tensor::from_slice(values)
}

#[test]
fn all_reduce_broadcast_and_barrier_across_two_processes() {
    let mut ranks = Ranks::spawn("collectives", 2);
    let t0 = Instant::now();
    for i in 0..2 {
        let (status, _, out) = ranks.wait(i, t0);
        assert!(status.success(), "rank {i} failed:\n{out}");
        assert!(out.contains("collectives ok"), "rank {i}:\n{out}");
    }
}

/// NCCL on two GPUs (one per rank): all-reduce, broadcast and barrier on
/// CUDA tensors. Prints why when skipped (fewer than two GPUs, or a build
/// without NCCL); `cargo xtask gpu-check` reads that line.
#[test]
fn nccl_collectives_across_two_gpus() {
    let gpus = tch::Cuda::device_count();
    if gpus < 2 || !tensor::distributed::has_nccl() {
        println!(
            "NCCL: skipped ({gpus} CUDA device(s), NCCL in this build: {})",
            tensor::distributed::has_nccl()
        );
        return;
    }
    let mut ranks = Ranks::spawn("nccl", 2);
    let t0 = Instant::now();
    for i in 0..2 {
        let (status, _, out) = ranks.wait(i, t0);
        assert!(status.success(), "rank {i} failed:\n{out}");
        assert!(out.contains("nccl ok"), "rank {i}:\n{out}");
    }
    println!("NCCL: ok (2 processes, 2 GPUs)");
}

#[test]
fn a_rank_that_exits_makes_the_other_fail_within_the_timeout() {
    let mut ranks = Ranks::spawn("one_dies", 2);
    let t0 = Instant::now();
    let (status, _, out) = ranks.wait(1, t0);
    assert_eq!(status.code(), Some(3), "rank 1:\n{out}");
    let (status, took, out) = ranks.wait(0, t0);
    assert_eq!(
        status.code(),
        Some(0),
        "rank 0 should have seen an error:\n{out}"
    );
    assert!(out.contains("peer failure reported"), "rank 0:\n{out}");
    // At once: the dead rank's connections close.
    assert!(took < Duration::from_secs(10), "rank 0 took {took:?}");
}

#[test]
fn a_rank_that_hangs_makes_the_other_time_out() {
    let mut ranks = Ranks::spawn("one_hangs", 2);
    let t0 = Instant::now();
    let (status, took, out) = ranks.wait(0, t0);
    assert_eq!(
        status.code(),
        Some(0),
        "rank 0 should have timed out:\n{out}"
    );
    assert!(out.contains("timeout reported"), "rank 0:\n{out}");
    assert!(
        took >= SHORT_TIMEOUT && took < SHORT_TIMEOUT * 3,
        "rank 0 took {took:?}"
    );
    // rank 1 is killed by the Drop of `ranks`.
}

#[test]
fn a_group_of_one_is_the_identity() {
    let port = free_port();
    let pg = ProcessGroup::new("127.0.0.1", port, 0, 1, Backend::Gloo, TIMEOUT).unwrap();
    let t = cpu(&[1.0, 2.0]);
    pg.all_reduce(&[t.shallow_clone()], ReduceOp::Avg).unwrap();
    pg.broadcast(&[t.shallow_clone()], 0).unwrap();
    pg.barrier().unwrap();
    assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0]);
    assert!(pg.broadcast(&[t], 1).is_err());
}

#[test]
fn bad_ranks_are_refused_without_a_rendezvous() {
    let err = ProcessGroup::new("127.0.0.1", 1, 2, 2, Backend::Gloo, TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank 2"), "{err}");
}

#[test]
fn buckets_respect_the_cap_dtype_and_order() {
    let f = |n: i64| Tensor::zeros([n], (Kind::Float, Device::Cpu));
    let d = |n: i64| Tensor::zeros([n], (Kind::Double, Device::Cpu));
    // 40-byte cap: floats of 4, 4, 8 (32 B), then 8 (alone, would overflow), 20 (80 B, alone).
    let ts = [f(4), d(2), f(4), f(2), f(8), f(20), d(3)];
    let b = tensor::distributed::plan_buckets(&ts, 40);
    assert_eq!(b, vec![vec![0, 2, 3], vec![4], vec![5], vec![1, 6]]);
    assert_eq!(
        tensor::distributed::plan_buckets(&ts[..1], 1),
        vec![vec![0]]
    );
    assert!(tensor::distributed::plan_buckets(&[], 10).is_empty());
}

#[test]
fn rendezvous_reads_torchrun_variables() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Rendezvous::from_vars(env(&[])).unwrap(), None);
    let r = Rendezvous::from_vars(env(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (r.rank, r.world_size, r.local_rank, r.port),
        (1, 2, 1, 29500)
    );
    assert_eq!(r.agent_store, None);
    let r = Rendezvous::from_vars(env(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(r.agent_store.as_deref(), Some("/worker/attempt_2"));
    let err = Rendezvous::from_vars(env(&[("WORLD_SIZE", "2"), ("RANK", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("MASTER_ADDR"), "{err}");
    let err = Rendezvous::from_vars(env(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "2"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("RANK=2"), "{err}");
    assert!("nccl".parse::<Backend>().is_ok() && "mpi".parse::<Backend>().is_err());
}

/// One rank of a scenario; does nothing unless started by the tests above.
#[test]
#[ignore = "a rank process, started by the other tests"]
fn rank() {
    let Ok(scenario) = std::env::var("LMZH_TEST_SCENARIO") else {
        return;
    };
    let timeout = if scenario == "one_hangs" {
        SHORT_TIMEOUT
    } else {
        TIMEOUT
    };
    let backend = if scenario == "nccl" {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    let pg = ProcessGroup::from_env(backend, timeout)
        .unwrap()
        .with_bucket_bytes(64);
    let r = pg.rank() as f32;
    match scenario.as_str() {
        "collectives" => collectives(&pg, r),
        "nccl" => nccl(&pg, r),
        "one_dies" => {
            pg.barrier().unwrap();
            if pg.rank() == 1 {
                // Leave without a goodbye (no destructor runs).
                std::process::exit(3);
            }
            std::thread::sleep(Duration::from_millis(200));
            let t = cpu(&[1.0; 8]);
            let err = pg.all_reduce(&[t], ReduceOp::Sum).unwrap_err();
            println!("peer failure reported: {err}");
            std::process::exit(0);
        }
        "one_hangs" => {
            pg.barrier().unwrap();
            if pg.rank() == 1 {
                std::thread::sleep(WATCHDOG);
                std::process::exit(4);
            }
            let t = cpu(&[1.0; 8]);
            let err = pg.all_reduce(&[t], ReduceOp::Sum).unwrap_err();
            println!("timeout reported: {err}");
            // Not dropping the group: its peer never answers.
            std::process::exit(0);
        }
        other => panic!("unknown scenario {other}"),
    }
}

fn collectives(pg: &ProcessGroup, r: f32) {
    assert_eq!(pg.world_size(), 2);
    // Mixed sizes and dtypes, a non-contiguous tensor, several buckets of
    // 64 bytes: sum and average.
    let a = cpu(&[r, 1.0, 2.0]);
    let b = Tensor::full([20], f64::from(r + 1.0), (Kind::Double, Device::Cpu));
    let c = (Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) * f64::from(r + 1.0)).tr();
    assert!(!c.is_contiguous());
    let d = Tensor::from_slice(&[i64::from(r as u8 + 1); 3]);
    let ts = [
        a.shallow_clone(),
        b.shallow_clone(),
        c.shallow_clone(),
        d.shallow_clone(),
    ];
    pg.all_reduce(&ts, ReduceOp::Sum).unwrap();
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), [1.0, 2.0, 4.0]);
    assert_eq!(Vec::<f64>::try_from(&b).unwrap(), vec![3.0; 20]);
    let want_c = (Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) * 3.0).tr();
    assert!(c.equal(&want_c), "{c}");
    assert_eq!(Vec::<i64>::try_from(&d).unwrap(), [3, 3, 3]);

    let avg = cpu(&[2.0 * r, 10.0]);
    pg.all_reduce(&[avg.shallow_clone()], ReduceOp::Avg)
        .unwrap();
    assert_eq!(Vec::<f32>::try_from(&avg).unwrap(), [1.0, 10.0]);

    // Broadcast from rank 1, with a parameter that requires grad.
    let p = cpu(&[r, r + 0.5]).set_requires_grad(true);
    let q = Tensor::full([40], f64::from(r), (Kind::Float, Device::Cpu));
    pg.broadcast(&[p.shallow_clone(), q.shallow_clone()], 1)
        .unwrap();
    assert_eq!(Vec::<f32>::try_from(&p.detach()).unwrap(), [1.0, 1.5]);
    assert_eq!(Vec::<f32>::try_from(&q).unwrap(), vec![1.0; 40]);

    pg.barrier().unwrap();
    println!("collectives ok (rank {})", pg.rank());
}

fn nccl(pg: &ProcessGroup, r: f32) {
    let gpu = Device::Cuda(pg.rank());
    let a = Tensor::from_slice(&[r, 1.0, 2.0]).to_device(gpu);
    let b = Tensor::full([1000], f64::from(r + 1.0), (Kind::Float, gpu));
    pg.all_reduce(&[a.shallow_clone(), b.shallow_clone()], ReduceOp::Sum)
        .unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&a.to_device(Device::Cpu)).unwrap(),
        [1.0, 2.0, 4.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(&b.to_device(Device::Cpu)).unwrap(),
        vec![3.0; 1000]
    );
    let avg = Tensor::from_slice(&[2.0 * r, 10.0]).to_device(gpu);
    pg.all_reduce(&[avg.shallow_clone()], ReduceOp::Avg)
        .unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&avg.to_device(Device::Cpu)).unwrap(),
        [1.0, 10.0]
    );
    let q = Tensor::full([40], f64::from(r), (Kind::Float, gpu));
    pg.broadcast(&[q.shallow_clone()], 1).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&q.to_device(Device::Cpu)).unwrap(),
        vec![1.0; 40]
    );
    pg.barrier().unwrap();
    println!("nccl ok (rank {})", pg.rank());
}
