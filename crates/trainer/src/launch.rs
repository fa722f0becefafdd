//! `--nproc N`: this very command run as N local processes on loopback, as
//! `torchrun --nproc-per-node N` would (the command line's launcher; the
//! training processes themselves join through [`crate::distributed`]).

use std::ffi::OsString;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Runs this very command as `nproc` local processes on loopback, as
/// `torchrun --nproc-per-node nproc` would: the same arguments less
/// `--nproc`, the same environment plus the rendezvous variables, and
/// `OMP_NUM_THREADS` / `RAYON_NUM_THREADS` (when unset) splitting the cores
/// between the processes. Waits for all of them; when one fails, the others
/// get `timeout` plus a grace period to fail too (they do, at their next
/// collective), then are killed. Errors name the first rank that failed.
pub fn launch_local(nproc: usize, timeout: Duration) -> Result<()> {
    let setup = |reason: String| Error::Setting {
        key: "--nproc".into(),
        reason,
    };
    if nproc == 0 {
        return Err(setup("must be at least 1".into()));
    }
    if std::env::var_os("WORLD_SIZE").is_some() {
        return Err(setup(
            "WORLD_SIZE is already set: under torchrun, leave --nproc out".into(),
        ));
    }
    let exe =
        std::env::current_exe().map_err(|e| setup(format!("cannot find this program: {e}")))?;
    let args = strip_nproc(std::env::args_os().skip(1));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| setup(format!("no free port on 127.0.0.1: {e}")))?
        .port();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / nproc).max(1).to_string();
    let mut children: Vec<Child> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string());
        for var in ["OMP_NUM_THREADS", "RAYON_NUM_THREADS"] {
            if std::env::var_os(var).is_none() {
                cmd.env(var, &threads);
            }
        }
        match cmd.spawn() {
            Ok(c) => children.push(c),
            Err(e) => {
                kill_all(&mut children);
                return Err(setup(format!("cannot start rank {rank}: {e}")));
            }
        }
    }
    eprintln!(
        "started {nproc} processes (rendezvous at 127.0.0.1:{port}, {threads} thread(s) each)"
    );
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; nproc];
    let mut first_failure: Option<(usize, std::process::ExitStatus, Instant)> = None;
    let grace = timeout + Duration::from_secs(30);
    loop {
        for (rank, c) in children.iter_mut().enumerate() {
            if status[rank].is_none() {
                if let Ok(Some(s)) = c.try_wait() {
                    status[rank] = Some(s);
                    if !s.success() && first_failure.is_none() {
                        first_failure = Some((rank, s, Instant::now()));
                    }
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if let Some((rank, _, at)) = first_failure {
            if at.elapsed() > grace {
                eprintln!("rank {rank} failed; stopping the ranks still running after {grace:?}");
                kill_all(&mut children);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    match first_failure {
        None => Ok(()),
        Some((rank, s, _)) => Err(Error::Setting {
            key: "--nproc".into(),
            reason: format!("rank {rank} of {nproc} failed ({s})"),
        }),
    }
}

fn kill_all(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `args` without `--nproc N` / `--nproc=N`.
fn strip_nproc(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
            continue;
        }
        match a.to_str() {
            Some("--nproc") => skip_next = true,
            Some(s) if s.starts_with("--nproc=") => {}
            _ => out.push(a),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nproc_is_removed_from_the_arguments() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            strip_nproc(args(&[
                "train",
                "--nproc",
                "2",
                "--steps",
                "5",
                "--nproc=3"
            ])),
            args(&["train", "--steps", "5"])
        );
    }
}
