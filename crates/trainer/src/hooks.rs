//! The periodic work of [`Trainer::run`] between steps: the metrics log,
//! sample grids, checkpoints and evaluation, one small function each.
//! Rank 0 writes files; the others join the collective parts only.

use std::path::Path;
use std::time::Instant;

use tch::Tensor;

use crate::checkpoint::{self, Snapshot};
use crate::evaluate::{self, Evaluator};
use crate::model::Model;
use crate::progress::{Fd, Progress, Status};
use crate::run_dir::{self, RunDir};
use crate::step::StepOutput;
use crate::trainer::Trainer;
use crate::{plot, preview, Result};

/// What the hooks keep between steps.
pub(crate) struct Hooks {
    run: RunDir,
    /// The fixed noise and labels of the sample grids.
    noise: Tensor,
    labels: Option<Tensor>,
    evaluator: Option<Evaluator>,
    started: Instant,
    /// Images this process trained on since `started`.
    pub(crate) images: usize,
    /// Losses since the last metrics line.
    window: Vec<f64>,
    pub(crate) last_loss: Option<f64>,
    /// The latest numbers, as the progress display shows them.
    status: Status,
}

impl Hooks {
    /// Prepares the hooks of `t`'s run: the grids' fixed noise and, on rank
    /// 0, the evaluator (against the best FD so far, on resume).
    pub(crate) fn new(t: &Trainer) -> Result<Hooks> {
        let run = t.run_dir()?;
        let data = t.data()?;
        let (noise, labels) =
            preview::fixed_inputs(&t.config, data.model_shape, data.num_classes, t.device);
        let text = t.model.text().is_some();
        if text && t.is_main() && t.config.eval.every > 0 {
            tracing::warn!(
                "in-training evaluation (FD/KID) is not available for text-conditioned runs; \
                 set eval.every = 0 to silence this"
            );
        }
        let mut evaluator = if t.is_main() && !text {
            Evaluator::new(&t.config, &data.probe, data.num_classes, t.device)?
        } else {
            None
        };
        if let (Some(e), true) = (evaluator.as_mut(), t.resumed) {
            e.best = evaluate::best_in_metrics(&run.metrics());
        }
        Ok(Hooks {
            run,
            noise,
            labels,
            evaluator,
            started: Instant::now(),
            images: 0,
            window: Vec::new(),
            last_loss: None,
            status: Status::default(),
        })
    }

    /// Seconds since the loop started.
    pub(crate) fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Takes note of a step: its loss for the next metrics line, or (a
    /// skipped step) a warning and a `skipped` line with its timesteps.
    pub(crate) fn record(&mut self, t: &Trainer, out: &StepOutput) -> Result<()> {
        self.images += out.images;
        if !out.skipped {
            self.window.push(out.loss);
            self.last_loss = Some(out.loss);
            return Ok(());
        }
        tracing::warn!(step = out.step, timesteps = ?out.timesteps, "non-finite loss or gradient; step skipped");
        if t.is_main() {
            run_dir::append_metrics(
                &self.run.metrics(),
                &serde_json::json!({"step": out.step, "skipped": true, "timesteps": out.timesteps}),
            )?;
        }
        Ok(())
    }

    /// Every `log.every` steps and at `last`: the mean loss since the last
    /// line, learning rate, gradient norm, throughput and epoch.
    pub(crate) fn log(
        &mut self,
        t: &Trainer,
        out: &StepOutput,
        last: u64,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let step = out.step;
        let due = step.is_multiple_of(t.config.log.every.max(1)) || step == last;
        if t.is_main() && due && !self.window.is_empty() {
            // All processes together (each reads as many images per step).
            let rate = t.dist.world_size() as f64 * self.images as f64 / self.seconds();
            let mean = self.window.iter().sum::<f64>() / self.window.len() as f64;
            self.window.clear();
            let epoch = t.data()?.loader.position().epoch;
            run_dir::append_metrics(
                &self.run.metrics(),
                &serde_json::json!({
                    "step": step, "loss": mean, "lr": out.lr, "grad_norm": out.grad_norm,
                    "img_per_s": rate, "epoch": epoch,
                }),
            )?;
            self.status.loss = Some(mean);
            self.status.images_per_second = Some(rate);
            progress.status(&self.status);
        }
        Ok(())
    }

    /// A grid sampled with the EMA weights from the fixed noise (rank 0):
    /// for text conditioning, one column per prompt.
    pub(crate) fn write_samples(&self, t: &Trainer) -> Result<()> {
        let images = t.ema.with_averaged(&t.params, || match &t.model {
            Model::Plain(unet) => preview::sample(
                unet,
                &t.scheduler_config,
                &self.noise,
                self.labels.as_ref(),
                t.null_label,
                (&t.config.log).into(),
            ),
            Model::Text(m) => preview::sample_text(
                m,
                &t.scheduler_config,
                &self.noise,
                &t.data()?.prompts,
                (&t.config.log).into(),
            ),
        })?;
        let path = self.run.samples().join(format!("step-{:06}.png", t.step));
        let prompts = t.data()?.prompts.len();
        let nrow = if self.labels.is_some() {
            10
        } else if t.model.text().is_some() {
            prompts.max(1) as i64
        } else {
            (images.size()[0] as f64).sqrt().ceil() as i64
        };
        tensor::image::save_grid(&path, &images, nrow)?;
        Ok(())
    }

    /// Redraws `loss.png` from `metrics.jsonl` (rank 0).
    pub(crate) fn plot_loss(&self) -> Result<()> {
        plot::loss_curve(&self.run.metrics(), &self.run.loss_plot())
    }

    /// Evaluates the EMA weights, logs the metrics and keeps the best
    /// checkpoint (rank 0; a no-op when evaluation is off). With `progress`,
    /// the FD joins the status.
    pub(crate) fn evaluate(
        &mut self,
        t: &Trainer,
        progress: Option<&mut dyn Progress>,
    ) -> Result<()> {
        let Some(e) = self.evaluator.as_mut() else {
            return Ok(());
        };
        let step = t.step;
        let started = Instant::now();
        let Some(unet) = t.model.unet() else {
            return Ok(());
        };
        let report = t.ema.with_averaged(&t.params, || {
            e.evaluate(unet, &t.scheduler_config, t.null_label, t.device)
        })?;
        let best = e.record(step, &report);
        if best {
            t.write_snapshot(&self.run.checkpoints().join("best.safetensors"))?;
        }
        run_dir::append_metrics(&self.run.metrics(), &e.metrics_line(step, &report, best))?;
        tracing::info!(
            step,
            fd = report.fd,
            kid = report.kid_mean,
            precision = report.precision,
            recall = report.recall,
            best,
            secs = started.elapsed().as_secs_f64(),
            "evaluation ({})",
            e.label()
        );
        self.status.fd = Some(Fd {
            label: e.label().to_string(),
            value: report.fd,
            step,
        });
        if let Some(p) = progress {
            p.status(&self.status);
        }
        Ok(())
    }
}

impl Trainer {
    /// Writes a checkpoint of the whole training state after the steps done
    /// so far, and the diffusers export of the EMA weights, to the run folder
    /// (rank 0; every rank first checks that the replicas agree).
    pub fn save_checkpoint(&self) -> Result<()> {
        self.dist.check_replicas(&self.params)?;
        if self.is_main() {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// [`Trainer::save_checkpoint`] without the replica check (rank 0).
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        let run = self.run_dir()?;
        let dir = run.checkpoints();
        self.write_snapshot(&dir.join(checkpoint::file_name(self.step)))?;
        checkpoint::prune(&dir, self.config.log.keep_checkpoints);
        // The diffusers export always holds the EMA weights of the last checkpoint.
        self.ema
            .with_averaged(&self.params, || self.model.save(&run.root))?;
        tracing::info!(step = self.step, "checkpoint written");
        Ok(())
    }

    /// Writes the whole training state to `path`.
    fn write_snapshot(&self, path: &Path) -> Result<()> {
        let model = self.model.variables();
        let optim = self.opt.state();
        let snap = Snapshot {
            step: self.step,
            optim_step: self.opt.step,
            position: self.data()?.loader.position(),
            skipped_steps: self.skipped_steps,
            config_toml: &self.config_toml,
            model: &model,
            ema: self.ema.shadow(),
            optim: &optim,
        };
        checkpoint::save(path, &snap)
    }
}
