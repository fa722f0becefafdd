//! The training loop: [`Trainer::run`], and [`train`], which sets a run up
//! and runs it.
//!
//! Each step is [`Trainer::step`] on the loader's next batches; between
//! steps the hooks (`hooks.rs`) write the metrics, sample grids,
//! checkpoints and evaluations. A step with a non-finite loss or gradient is
//! skipped (no update), logged with its timesteps, and counted; after
//! `log.max_bad_steps` in a row the run stops with its last good checkpoint
//! intact. Ctrl-C (the `interrupt` flag) stops every rank after the same
//! step, with a checkpoint.

use std::path::{Path, PathBuf};

use crate::hooks::Hooks;
use crate::progress::{Lines, Progress};
use crate::{checkpoint, Error, Result, TrainConfig, Trainer};

pub use crate::model::trainable_params;
pub use crate::objective::{objective, Batch};
pub use crate::trainer::TrainOptions;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub last_loss: Option<f64>,
    /// Training images per second over the run (this process only).
    pub images_per_second: f64,
    pub skipped_steps: u64,
    pub skipped_files: usize,
    pub interrupted: bool,
    /// This process's rank and the number of processes (0 and 1 alone).
    pub rank: usize,
    pub world_size: usize,
    /// Digest of the trained parameters, equal on every rank
    /// ([`crate::distributed::digest`]).
    pub params_digest: u64,
}

/// Finds the checkpoint `--resume` names: a checkpoint file, a run folder
/// (its newest checkpoint), or `latest` (the newest checkpoint of the newest
/// run under `runs_dir`).
pub fn resolve_resume(spec: &str, runs_dir: &Path) -> Result<PathBuf> {
    let newest_in = |dir: &Path| {
        checkpoint::list(&dir.join("checkpoints"))
            .pop()
            .map(|(_, p)| p)
            .ok_or_else(|| Error::NothingToResume(dir.to_path_buf()))
    };
    if spec == "latest" {
        let entries = match std::fs::read_dir(runs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NothingToResume(runs_dir.to_path_buf()))
            }
            Err(e) => return Err(Error::io(runs_dir, e)),
        };
        let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !checkpoint::list(&p.join("checkpoints")).is_empty())
            .filter_map(|p| {
                Some((
                    std::fs::metadata(p.join("checkpoints"))
                        .ok()?
                        .modified()
                        .ok()?,
                    p,
                ))
            })
            .collect();
        runs.sort();
        let (_, dir) = runs
            .pop()
            .ok_or_else(|| Error::NothingToResume(runs_dir.to_path_buf()))?;
        return newest_in(&dir);
    }
    let p = PathBuf::from(spec);
    if p.is_dir() {
        newest_in(&p)
    } else if p.is_file() {
        Ok(p)
    } else {
        Err(Error::io(&p, std::io::ErrorKind::NotFound.into()))
    }
}

/// Trains a model as `config` says. With `opts.resume`, the checkpoint's
/// config is used instead (with `opts.steps` as the new total, if given).
/// `opts.progress` shows the progress on stderr (rank 0): a progress bar
/// when stderr is a terminal (with the `cli` feature), else plain lines
/// ([`Lines`]).
pub fn train(config: TrainConfig, opts: &TrainOptions) -> Result<Summary> {
    let mut trainer = Trainer::new(config, opts)?;
    if !(opts.progress && trainer.is_main()) {
        return trainer.run(&mut ());
    }
    #[cfg(feature = "cli")]
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return trainer.run(&mut crate::progress::Bar::new());
    }
    trainer.run(&mut Lines::stderr())
}

impl Trainer {
    /// Trains to `config.steps` (or `stop_after`, or until interrupted),
    /// with the periodic hooks, then writes the final checkpoint, samples
    /// and evaluation. Needs a trainer from [`Trainer::new`].
    pub fn run(&mut self, progress: &mut dyn Progress) -> Result<Summary> {
        let mut hooks = Hooks::new(self)?;
        let last = self
            .stop_after
            .map_or(self.config.steps, |s| s.min(self.config.steps));
        progress.start(self.step, self.config.steps);
        let interrupted = match self.train_until(last, &mut hooks, progress) {
            Ok(interrupted) => interrupted,
            Err(e) => {
                progress.finish(false);
                return Err(e);
            }
        };
        progress.finish(true);
        self.finish_run(&mut hooks, interrupted)
    }

    /// The loop; true when it was interrupted.
    fn train_until(
        &mut self,
        last: u64,
        hooks: &mut Hooks,
        progress: &mut dyn Progress,
    ) -> Result<bool> {
        let main = self.is_main();
        while self.step < last {
            // Every rank stops at the same step when any was interrupted.
            if self.dist.any(self.interrupt_requested())? {
                return Ok(true);
            }
            let batches = self.next_batches()?;
            let out = self.step(&batches)?;
            hooks.record(self, &out)?;
            if out.skipped && self.bad_in_a_row >= self.config.log.max_bad_steps {
                return Err(Error::Diverged {
                    count: self.bad_in_a_row,
                    step: self.step,
                });
            }
            hooks.log(self, &out, last, progress)?;
            let every = |k: u64| k > 0 && self.step.is_multiple_of(k) && self.step < last;
            if main && every(self.config.log.sample_every) {
                hooks.write_samples(self)?;
                hooks.plot_loss()?;
            }
            if every(self.config.log.checkpoint_every) {
                self.save_checkpoint()?;
            }
            if every(self.config.eval.every) {
                hooks.evaluate(self, Some(progress))?;
            }
            // After the step's hooks, so its line shows its evaluation.
            progress.position(self.step);
        }
        Ok(false)
    }

    /// The final checkpoint, samples and evaluation, and the summary.
    fn finish_run(&self, hooks: &mut Hooks, interrupted: bool) -> Result<Summary> {
        // Training throughput over the loop; the final save and samples are not training.
        let secs = hooks.seconds();
        let params_digest = self.dist.check_replicas(&self.params)?;
        if self.is_main() {
            self.write_checkpoint()?;
            if !interrupted {
                hooks.write_samples(self)?;
                hooks.evaluate(self, None)?;
            }
            hooks.plot_loss()?;
        }
        Ok(Summary {
            run_dir: self.run_dir()?.root,
            steps: self.step,
            last_loss: hooks.last_loss,
            images_per_second: hooks.images as f64 / secs,
            skipped_steps: self.skipped_steps,
            skipped_files: self.data()?.loader.skipped().len(),
            interrupted,
            rank: self.dist.rank(),
            world_size: self.dist.world_size(),
            params_digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_resume_path_says_no_such_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.safetensors");
        let err = resolve_resume(missing.to_str().unwrap(), dir.path())
            .unwrap_err()
            .to_string();
        assert_eq!(err, format!("no such file: {}", missing.display()));
        let err = resolve_resume("latest", &dir.path().join("no-runs"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no checkpoint to resume from in ") && err.ends_with("no-runs"),
            "{err}"
        );
    }
}
