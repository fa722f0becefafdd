//! The training loop.
//!
//! Each step draws its random numbers (timesteps, noise, label dropout,
//! dropout masks) from libtorch's generator seeded by (seed, step), reads its
//! batch from the loader's resumable stream, and takes one AdamW step on the
//! (optionally min-SNR-weighted) MSE between the model output and its target,
//! then updates the EMA. Everything that decides the next step is therefore
//! in the checkpoint, and a resumed run continues bit-identically on the CPU.
//!
//! A step with a non-finite loss or gradient is skipped (no update), logged
//! with its timesteps, and counted; after `log.max_bad_steps` in a row the
//! run stops with its last good checkpoint intact.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use data_pipeline::loader::{DataLoader, Position};
use data_pipeline::source::OpenOptions;
use schedule::{Schedule, SchedulerConfig};
use tch::{Device, Kind, Tensor};
use unet::UNet;

use crate::checkpoint::{self, Snapshot};
use crate::config::TrainConfig;
use crate::distributed::{Dist, DistOptions};
use crate::ema::Ema;
use crate::evaluate::{self, Evaluator};
use crate::optim::AdamW;
use crate::run_dir::{self, RunDir, RunInfo};
use crate::{plot, preview, Error, Result};

/// How to run (as opposed to what to train, which is the config).
#[derive(Debug, Default, Clone)]
pub struct TrainOptions {
    /// Continue from this checkpoint file.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this step, before `config.steps`.
    pub stop_after: Option<u64>,
    /// Show a progress bar.
    pub progress: bool,
    /// Set to stop cleanly with a checkpoint (Ctrl-C).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Make the loss of step number `n` (1-based, as in metrics.jsonl) NaN,
    /// for tests of the divergence guard.
    pub inject_nan_at: Option<u64>,
    /// On resume: train to this many steps instead of the saved config's.
    pub steps: Option<u64>,
    /// Join the multi-process run that torchrun's variables describe, if any
    /// (see [`crate::distributed`]); `None`: one process, whatever the
    /// environment says.
    pub distributed: Option<DistOptions>,
}

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

/// Everything a step needs.
struct State {
    config: TrainConfig,
    device: Device,
    unet: UNet,
    params: Vec<(String, Tensor)>,
    opt: AdamW,
    ema: Ema,
    schedule: Schedule,
    scheduler_config: SchedulerConfig,
    null_label: Option<i64>,
    run: RunDir,
    config_toml: String,
    dist: Dist,
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
        let mut runs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(runs_dir)
            .map_err(|e| Error::io(runs_dir, e))?
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
pub fn train(config: TrainConfig, opts: &TrainOptions) -> Result<Summary> {
    let resumed = match &opts.resume {
        Some(path) => Some(checkpoint::load(path, Device::Cpu)?),
        None => None,
    };
    let (config, run_root) = match &resumed {
        Some(ck) => {
            let path = opts.resume.as_ref().expect("resume set");
            let mut saved: TrainConfig =
                toml::from_str(&ck.config_toml).map_err(|e| Error::Checkpoint {
                    path: path.clone(),
                    reason: format!("its config does not parse: {e}"),
                })?;
            if let Some(steps) = opts.steps {
                saved.steps = steps;
            }
            let root = path
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (saved, root)
        }
        None => {
            let name = if config.name.is_empty() {
                run_dir::timestamped("run")
            } else {
                config.name.clone()
            };
            let root = config.runs_dir.join(&name);
            (config, root)
        }
    };
    config.validate()?;
    let device = config.device.resolve()?;
    let dist = match &opts.distributed {
        Some(o) => Dist::from_env(o, device)?,
        None => Dist::single(),
    };
    let device = dist.device(device);
    // Only rank 0 writes the run folder.
    let main = dist.is_main();
    let run = if main {
        RunDir::create(run_root)?
    } else {
        RunDir { root: run_root }
    };

    // Data.
    let dataset = config.data.source.open(&OpenOptions {
        strict: config.data.strict,
        cache: None,
    })?;
    let probe = config
        .data
        .preprocess
        .apply_deterministic(dataset.image(0)?);
    let class_names = dataset.class_names().to_vec();
    let num_classes = if config.model.class_conditional {
        class_names.len()
    } else {
        0
    };
    let start_pos = resumed.as_ref().map(|c| c.position).unwrap_or_default();
    let mut loader = DataLoader::sharded(
        dataset,
        config.data.preprocess.clone(),
        config.loader(),
        start_pos,
        dist.shard(),
    )?;

    // Model, optimiser, EMA.
    let unet_config =
        config
            .model
            .unet_config(probe.channels as i64, probe.height as i64, num_classes)?;
    tch::manual_seed(tensor::seed::derive_seed(config.seed, "init") as i64);
    let mut unet = UNet::new(&unet_config, device)?;
    if config.channels_last {
        unet.to_channels_last();
    }
    tensor::amp::check(config.mixed_precision, device)?;
    let params = trainable_params(&unet);
    let opt = AdamW::new(
        params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        config.optim.clone(),
    )?;
    let ema = Ema::new(&params, config.ema.clone())?;
    let scheduler_config = config.noise.scheduler_config();
    let schedule = Schedule::from_config(&scheduler_config)?;
    let null_label = config
        .model
        .class_conditional
        .then_some(class_names.len() as i64);
    let config_toml = config.to_toml();
    let mut st = State {
        config,
        device,
        unet,
        params,
        opt,
        ema,
        schedule,
        scheduler_config,
        null_label,
        run,
        config_toml,
        dist,
    };

    let mut step = 0;
    let mut skipped_steps = 0;
    if let Some(ck) = &resumed {
        restore(&mut st, ck)?;
        step = ck.step;
        skipped_steps = ck.skipped_steps;
        if main {
            run_dir::truncate_metrics(&st.run.metrics(), step)?;
        }
        tracing::info!(step, run = %st.run.root.display(), "resumed");
    } else if main {
        tensor::fs::write_bytes_atomic(&st.run.config(), st.config_toml.as_bytes())?;
    }
    sync_replicas(&st)?;
    if main {
        write_run_files(&st, &class_names, num_classes)?;
    }

    let (noise, labels) = preview::fixed_inputs(&st.config, &probe, num_classes, device);
    let mut evaluator = if main {
        Evaluator::new(&st.config, &probe, num_classes, device)?
    } else {
        None
    };
    if let (Some(e), Some(_)) = (evaluator.as_mut(), &resumed) {
        e.best = evaluate::best_in_metrics(&st.run.metrics());
    }
    let total = st.config.steps;
    let last = opts.stop_after.map_or(total, |s| s.min(total));
    let bar = progress_bar(opts.progress && main, step, total);
    let world = st.dist.world_size() as f64;
    let started = Instant::now();
    let mut images = 0usize;
    let mut bad_in_a_row = 0;
    let mut last_loss = None;
    let mut window: Vec<f64> = Vec::new();
    let mut interrupted = false;

    while step < last {
        // Every rank stops at the same step when any was interrupted.
        let stop = opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst));
        if st.dist.any(stop)? {
            interrupted = true;
            break;
        }
        let out = train_step(
            &mut st,
            &mut loader,
            step,
            opts.inject_nan_at == Some(step + 1),
        )?;
        images += out.images;
        step += 1;
        if out.finite {
            bad_in_a_row = 0;
            window.push(out.loss);
            last_loss = Some(out.loss);
        } else {
            bad_in_a_row += 1;
            skipped_steps += 1;
            tracing::warn!(step, timesteps = ?out.timesteps, "non-finite loss or gradient; step skipped");
            if main {
                run_dir::append_metrics(
                    &st.run.metrics(),
                    &serde_json::json!({"step": step, "skipped": true, "timesteps": out.timesteps}),
                )?;
            }
            if bad_in_a_row >= st.config.log.max_bad_steps {
                bar.abandon();
                return Err(Error::Diverged {
                    count: bad_in_a_row,
                    step,
                });
            }
        }
        // All processes together (each reads as many images per step).
        let rate = world * images as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if main && (step % st.config.log.every.max(1) == 0 || step == last) && !window.is_empty() {
            let mean = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            run_dir::append_metrics(
                &st.run.metrics(),
                &serde_json::json!({
                    "step": step, "loss": mean, "lr": out.lr, "grad_norm": out.grad_norm,
                    "img_per_s": rate, "epoch": loader.position().epoch,
                }),
            )?;
            bar.set_message(format!("loss {mean:.4}  {rate:.0} img/s"));
        }
        bar.set_position(step);
        let every = |k: u64| k > 0 && step % k == 0 && step < last;
        if main && every(st.config.log.sample_every) {
            write_samples(&st, step, &noise, labels.as_ref())?;
            plot::loss_curve(&st.run.metrics(), &st.run.loss_plot())?;
        }
        if every(st.config.log.checkpoint_every) {
            st.dist.check_replicas(&st.params)?;
            if main {
                save_checkpoint(&st, step, loader.position(), skipped_steps)?;
            }
        }
        if let Some(e) = evaluator.as_mut().filter(|_| every(st.config.eval.every)) {
            let fd = run_eval(&st, e, step, loader.position(), skipped_steps)?;
            bar.set_message(format!("{}  FD-{} {fd:.3}", bar.message(), e.label()));
        }
    }
    bar.finish_and_clear();
    // Training throughput over the loop; the final save and samples are not training.
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let params_digest = st.dist.check_replicas(&st.params)?;
    if main {
        save_checkpoint(&st, step, loader.position(), skipped_steps)?;
        if !interrupted {
            write_samples(&st, step, &noise, labels.as_ref())?;
            if let Some(e) = evaluator.as_mut() {
                run_eval(&st, e, step, loader.position(), skipped_steps)?;
            }
        }
        plot::loss_curve(&st.run.metrics(), &st.run.loss_plot())?;
    }
    Ok(Summary {
        run_dir: st.run.root.clone(),
        steps: step,
        last_loss,
        images_per_second: images as f64 / secs,
        skipped_steps,
        skipped_files: loader.skipped().len(),
        interrupted,
        rank: st.dist.rank(),
        world_size: st.dist.world_size(),
        params_digest,
    })
}

/// The run's `run.json` and diffusers pipeline files (rank 0).
fn write_run_files(st: &State, class_names: &[String], num_classes: usize) -> Result<()> {
    st.run.write_info(&RunInfo {
        class_names: if num_classes > 0 {
            class_names.to_vec()
        } else {
            Vec::new()
        },
        null_label: st.null_label,
        preprocess: st.config.data.preprocess.deterministic(),
        source: st.config.data.source.to_string(),
    })?;
    st.run.write_pipeline_files(&st.scheduler_config)?;
    Ok(())
}

/// Makes every replica start from rank 0's state: parameters and buffers,
/// EMA and optimiser moments.
fn sync_replicas(st: &State) -> Result<()> {
    if st.dist.world_size() == 1 {
        return Ok(());
    }
    // By name: `variables()` is a HashMap, in a different order in each process.
    let mut vars: Vec<(String, Tensor)> = st.unet.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut all: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
    all.extend(st.ema.shadow().iter().map(|(_, t)| t.shallow_clone()));
    all.extend(st.opt.state().into_values());
    st.dist.broadcast_from_main(&all)
}

/// The model's trained tensors by name, in name order (the order of the
/// optimiser state, the EMA and the gradient buckets).
pub fn trainable_params(unet: &UNet) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Tensor)> = unet
        .vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// One micro-batch of the objective: clean images, the noise drawn for them,
/// their timesteps and (class-conditional models) their labels after label
/// dropout.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub x0: &'a Tensor,
    pub noise: &'a Tensor,
    /// `[N]` integer timesteps.
    pub t: &'a Tensor,
    pub labels: Option<&'a Tensor>,
}

/// The training loss of one micro-batch: the (optionally weighted) MSE
/// between the model's output on x_t and its target for the prediction
/// type, averaged over the batch, as an f32 scalar ready for `backward`.
///
/// With `precision` bf16 the U-Net's forward pass runs under autocast (and
/// so, by autograd, its backward pass); the noising, the target and the loss
/// stay in f32. Dropout is on.
pub fn objective(
    unet: &UNet,
    schedule: &Schedule,
    noise_config: &crate::config::NoiseConfig,
    precision: tensor::Precision,
    batch: &Batch<'_>,
) -> Result<Tensor> {
    let x_t = schedule.add_noise(batch.x0, batch.noise, batch.t)?;
    let device = unet.model.device();
    let pred = tensor::amp::autocast(device, precision, || {
        unet.forward_t(&x_t, batch.t, batch.labels, true)
    })??
    .to_kind(Kind::Float);
    let target = schedule.target(noise_config.prediction_type, batch.x0, batch.noise, batch.t)?;
    let per_sample = (pred - target)
        .square()
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
    let w = noise_config.loss_weighting.weights(
        schedule,
        noise_config.prediction_type,
        batch.t,
        Kind::Float,
    )?;
    Ok((per_sample * w).mean(Kind::Float))
}

struct StepOut {
    loss: f64,
    grad_norm: f64,
    lr: f64,
    finite: bool,
    images: usize,
    timesteps: Vec<i64>,
}

fn train_step(
    st: &mut State,
    loader: &mut DataLoader,
    step: u64,
    inject_nan: bool,
) -> Result<StepOut> {
    let step_seed = tensor::seed::derive_seed(st.config.seed, "step") ^ step;
    let accum = st.config.grad_accum;
    let mut loss_sum = Tensor::zeros([], (Kind::Float, st.device));
    let mut images = 0;
    // Kept on the device; read back only to log a skipped step.
    let mut all_t: Vec<Tensor> = Vec::new();
    for k in 0..accum {
        // Micro-batch g of the step, over all ranks: (seed, step) for g = 0
        // as ever, (seed, step, g) after, so N ranks draw what one process
        // with N times the accumulation draws.
        let g = st.dist.micro_batch(k);
        let seed = if g == 0 {
            step_seed
        } else {
            tensor::seed::derive_seed(step_seed, &format!("micro-batch {g}"))
        };
        tch::manual_seed(seed as i64);
        let batch = loader.next_batch()?;
        let x0 = batch.images.to_device(st.device);
        let n = x0.size()[0];
        images += n as usize;
        let t = Tensor::randint(
            st.schedule.num_train_timesteps() as i64,
            [n],
            (Kind::Int64, st.device),
        );
        let mut noise = x0.randn_like();
        if st.config.noise.offset_noise > 0.0 {
            let [_, c, _, _] = x0.size()[..] else {
                unreachable!("4-d batch")
            };
            noise += Tensor::randn([n, c, 1, 1], (Kind::Float, st.device))
                * st.config.noise.offset_noise;
        }
        let labels = match (st.null_label, &batch.labels) {
            (Some(null), Some(l)) => {
                let l = l.to_device(st.device);
                let drop =
                    Tensor::rand([n], (Kind::Float, st.device)).lt(st.config.model.label_dropout);
                Some(l.where_self(
                    &drop.logical_not(),
                    &Tensor::full([n], null, (Kind::Int64, st.device)),
                ))
            }
            _ => None,
        };
        let batch = Batch {
            x0: &x0,
            noise: &noise,
            t: &t,
            labels: labels.as_ref(),
        };
        let mut loss = objective(
            &st.unet,
            &st.schedule,
            &st.config.noise,
            st.config.mixed_precision,
            &batch,
        )? / accum as f64;
        if inject_nan {
            loss *= f64::NAN;
        }
        loss.backward();
        loss_sum += loss.detach();
        all_t.push(t);
    }
    if st.dist.world_size() > 1 {
        // Average the loss and the gradients over the ranks (bucketed).
        let mut all = vec![loss_sum.shallow_clone()];
        all.extend(
            st.params
                .iter()
                .map(|(_, p)| p.grad())
                .filter(Tensor::defined),
        );
        st.dist.average(&all)?;
    }
    let grad_norm = st.opt.grad_norm();
    // One host sync per step: the divergence guard needs to know.
    let both = Tensor::stack(
        &[
            loss_sum.to_kind(Kind::Double),
            grad_norm.to_kind(Kind::Double).to_device(st.device),
        ],
        0,
    )
    .to_device(Device::Cpu);
    let (loss, norm) = (both.double_value(&[0]), both.double_value(&[1]));
    let lr = st.config.optim.lr_at(st.opt.step, st.config.steps);
    let finite = loss.is_finite() && norm.is_finite();
    if finite {
        st.opt.clip_grad_norm(&grad_norm);
        st.opt.step(lr);
        st.ema.update(&st.params, st.opt.step);
    }
    st.opt.zero_grad();
    Ok(StepOut {
        loss,
        grad_norm: norm,
        lr,
        finite,
        images,
        timesteps: if finite {
            Vec::new()
        } else {
            all_t
                .iter()
                .flat_map(|t| Vec::<i64>::try_from(t.to_device(Device::Cpu)).unwrap_or_default())
                .collect()
        },
    })
}

fn restore(st: &mut State, ck: &checkpoint::Checkpoint) -> Result<()> {
    let vars = st.unet.vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let src = ck.model.get(&name).ok_or_else(|| Error::Setting {
                key: format!("model.{name}"),
                reason: "missing from the checkpoint".into(),
            })?;
            var.f_copy_(src)?;
        }
        Ok(())
    })?;
    st.ema.load(&ck.ema)?;
    st.opt.load_state(&ck.optim, ck.optim_step)?;
    Ok(())
}

/// Evaluates the EMA weights, logs the metrics and keeps the best checkpoint;
/// returns the FD.
fn run_eval(
    st: &State,
    e: &mut Evaluator,
    step: u64,
    position: Position,
    skipped_steps: u64,
) -> Result<f64> {
    let started = Instant::now();
    let report = st.ema.with_averaged(&st.params, || {
        e.evaluate(&st.unet, &st.scheduler_config, st.null_label, st.device)
    })?;
    let best = e.record(step, &report);
    if best {
        let path = st.run.checkpoints().join("best.safetensors");
        write_snapshot(st, &path, step, position, skipped_steps)?;
    }
    run_dir::append_metrics(&st.run.metrics(), &e.metrics_line(step, &report, best))?;
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
    Ok(report.fd)
}

fn save_checkpoint(st: &State, step: u64, position: Position, skipped_steps: u64) -> Result<()> {
    let dir = st.run.checkpoints();
    write_snapshot(
        st,
        &dir.join(checkpoint::file_name(step)),
        step,
        position,
        skipped_steps,
    )?;
    checkpoint::prune(&dir, st.config.log.keep_checkpoints);
    // The diffusers export always holds the EMA weights of the last checkpoint.
    st.ema
        .with_averaged(&st.params, || st.unet.save(st.run.root.join("unet")))?;
    tracing::info!(step, "checkpoint written");
    Ok(())
}

/// Writes the whole training state at `step` to `path`.
fn write_snapshot(
    st: &State,
    path: &Path,
    step: u64,
    position: Position,
    skipped_steps: u64,
) -> Result<()> {
    let model: Vec<(String, Tensor)> = {
        let mut v: Vec<_> = st.unet.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let optim = st.opt.state();
    let snap = Snapshot {
        step,
        optim_step: st.opt.step,
        position,
        skipped_steps,
        config_toml: &st.config_toml,
        model: &model,
        ema: st.ema.shadow(),
        optim: &optim,
    };
    checkpoint::save(path, &snap)
}

fn write_samples(st: &State, step: u64, noise: &Tensor, labels: Option<&Tensor>) -> Result<()> {
    let images = st.ema.with_averaged(&st.params, || {
        preview::sample(
            &st.unet,
            &st.scheduler_config,
            noise,
            labels,
            st.null_label,
            (&st.config.log).into(),
        )
    })?;
    let path = st.run.samples().join(format!("step-{step:06}.png"));
    let nrow = if labels.is_some() {
        10
    } else {
        (images.size()[0] as f64).sqrt().ceil() as i64
    };
    tensor::image::save_grid(&path, &images, nrow)?;
    Ok(())
}

fn progress_bar(show: bool, start: u64, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_position(start);
    bar
}
