//! Data-parallel training with real processes on loopback (Gloo): the
//! `trainer` binary, started by its own launcher (`--nproc 2`) or by hand
//! with torchrun's variables. Every child is killed by a watchdog, so no test
//! can hang.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tch::Device;
use trainer::checkpoint;
use trainer::{train, TrainConfig, TrainOptions};

/// `--dist-timeout` of the runs.
const TIMEOUT_S: u64 = 30;
/// How long any child may run before it is killed and the test fails.
const WATCHDOG: Duration = Duration::from_secs(180);

/// A tiny model on 8x8 digits, batch 4 per process, runs under `dir/runs`.
fn tiny(dir: &Path, name: &str, steps: u64) -> TrainConfig {
    common::tiny(&dir.join("runs"), name, steps, 4)
}

fn write_config(dir: &Path, c: &TrainConfig) -> PathBuf {
    let p = dir.join(format!("{}.toml", c.name));
    std::fs::write(&p, c.to_toml()).unwrap();
    p
}

fn trainer(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_trainer"));
    cmd.arg("--config")
        .arg(config)
        .args(["--quiet", "--dist-timeout", &TIMEOUT_S.to_string()])
        .env("OMP_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("WORLD_SIZE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Children killed on drop, whatever happened.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    /// Waits for child `i` (failing the test after the watchdog): status,
    /// when it ended, stdout + stderr.
    fn wait(&mut self, i: usize, t0: Instant) -> (ExitStatus, Duration, String) {
        let c = &mut self.0[i];
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                let took = t0.elapsed();
                let mut out = String::new();
                c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                c.stderr.take().unwrap().read_to_string(&mut out).unwrap();
                return (s, took, out);
            }
            assert!(t0.elapsed() < WATCHDOG, "process {i} still running: killed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn digest_of(out: &str, prefix: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once("digest ").map(|(_, d)| d[..16].to_string()))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
}

fn last_checkpoint(run: &Path) -> PathBuf {
    checkpoint::list(&run.join("checkpoints"))
        .pop()
        .expect("a checkpoint")
        .1
}

#[test]
fn two_processes_equal_one_process_on_the_union_of_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 6;
    // Two processes with batch 4, through the launcher.
    let cfg = write_config(dir.path(), &tiny(dir.path(), "two", steps));
    let mut procs = Procs(vec![trainer(&cfg).args(["--nproc", "2"]).spawn().unwrap()]);
    let (status, _, out) = procs.wait(0, Instant::now());
    assert!(status.success(), "launcher failed:\n{out}");
    // The replicas are bit-identical (each rank reports its digest).
    let d0 = digest_of(&out, "rank 0 of 2");
    let d1 = digest_of(&out, "rank 1 of 2");
    assert_eq!(d0, d1, "{out}");

    // One process with grad_accum 2 reads the same 8 images per step and
    // draws the same random numbers.
    let mut one = tiny(dir.path(), "one", steps);
    one.grad_accum = 2;
    let single = train(one, &TrainOptions::default()).unwrap();

    // Only rank 0 wrote: one run folder for the two processes.
    let mut runs: Vec<String> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    runs.sort();
    assert_eq!(runs, ["one", "two"]);

    let a = checkpoint::load(&last_checkpoint(&dir.path().join("runs/two")), Device::Cpu).unwrap();
    let b = checkpoint::load(&last_checkpoint(&single.run_dir), Device::Cpu).unwrap();
    assert_eq!((a.step, a.position), (b.step, b.position));
    assert_eq!(a.model.len(), b.model.len());
    // Gradients agree to float rounding (the sum runs in another order).
    // The exception is the attention key bias, whose gradient is zero in
    // exact arithmetic (softmax ignores a shift shared by all keys): AdamW
    // scales its rounding noise up to steps of about the learning rate, so
    // there only that bound holds.
    let mut worst = 0f64;
    for (name, ta) in &a.model {
        let tb = &b.model[name];
        let diff = (ta - tb).abs().max().double_value(&[]);
        let bound = if name.ends_with("to_k.bias") {
            3e-3 * steps as f64
        } else {
            worst = worst.max(diff);
            1e-5
        };
        assert!(
            diff <= bound,
            "{name} differs by {diff:e} (bound {bound:e})"
        );
    }
    eprintln!("largest difference to the single process: {worst:e}");
    // The loss curves agree too.
    let la = trainer::run_dir::read_losses(&dir.path().join("runs/two/metrics.jsonl"));
    let lb = trainer::run_dir::read_losses(&single.run_dir.join("metrics.jsonl"));
    assert_eq!(la.len(), steps as usize);
    for ((sa, xa), (sb, xb)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert!(
            (xa - xb).abs() < 1e-4 * xb.abs().max(1.0),
            "step {sa}: {xa} vs {xb}"
        );
    }
}

#[test]
fn a_killed_rank_stops_the_other_within_the_timeout_and_the_checkpoint_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny(dir.path(), "killed", 100_000);
    c.log.checkpoint_every = 2;
    let cfg = write_config(dir.path(), &c);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut procs = Procs(
        (0..2)
            .map(|rank| {
                trainer(&cfg)
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", &port)
                    .env("RANK", rank.to_string())
                    .env("LOCAL_RANK", rank.to_string())
                    .env("WORLD_SIZE", "2")
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let run = dir.path().join("runs/killed");
    let t0 = Instant::now();
    while checkpoint::list(&run.join("checkpoints")).len() < 2 {
        if let Some(s) = procs.0[0].try_wait().unwrap() {
            panic!("rank 0 ended early ({s})");
        }
        assert!(t0.elapsed() < WATCHDOG, "no checkpoint after {WATCHDOG:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.0[1].kill().unwrap();
    let killed = Instant::now();
    let (status, took, out) = procs.wait(0, killed);
    assert!(!status.success(), "rank 0 went on:\n{out}");
    assert!(
        took < Duration::from_secs(TIMEOUT_S),
        "rank 0 took {took:?} to stop:\n{out}"
    );
    assert!(out.contains("distributed"), "{out}");
    eprintln!("rank 0 stopped {took:?} after rank 1 was killed");

    // The newest checkpoint loads, and resumes in a single process.
    let ck_path = last_checkpoint(&run);
    let ck = checkpoint::load(&ck_path, Device::Cpu).unwrap();
    assert!(
        ck.step >= 2 && ck.step.is_multiple_of(2),
        "step {}",
        ck.step
    );
    let resumed = train(
        tiny(dir.path(), "ignored", 0),
        &TrainOptions {
            resume: Some(ck_path),
            steps: Some(ck.step + 2),
            ..TrainOptions::default()
        },
    )
    .unwrap();
    assert_eq!(resumed.steps, ck.step + 2);
    assert_eq!(resumed.run_dir, run);
}
