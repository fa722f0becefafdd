//! [`Trainer`]: a training run set up and ready to step.
//!
//! [`Trainer::new`] does everything that comes before step 0 (resume, the run
//! folder, the data loader, the U-Net, AdamW, the EMA, the process group);
//! [`Trainer::step`] trains one optimiser step; [`Trainer::run`] is the loop
//! with its periodic hooks. [`Trainer::for_model`] builds the same training
//! state without data or run folder, for callers that bring their own
//! batches (`lmzh bench train`, tests).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use data_pipeline::loader::DataLoader;
use data_pipeline::preprocess::Chw;
use data_pipeline::source::{CaptionOptions, Dataset, OpenOptions};
use schedule::{Schedule, SchedulerConfig};
use tch::{Device, Tensor};
use text::{ClipTextConfig, ClipTextModel, ClipTokenizer, DType};
use unet::{ConditionUNet, UNet, UNetConditionConfig, UNetConfig};
use vae::Vae;

use crate::checkpoint::{self, Checkpoint};
use crate::config::{Conditioning, TrainConfig};
use crate::distributed::{self, Dist, DistOptions};
use crate::ema::Ema;
use crate::model::{self, Model, TextModel};
use crate::optim::AdamW;
use crate::run_dir::{self, Pipeline, RunDir, RunInfo};
use crate::{Error, Result};

/// How to run (as opposed to what to train, which is the config).
#[derive(Debug, Default, Clone)]
pub struct TrainOptions {
    /// Continue from this checkpoint file.
    pub resume: Option<PathBuf>,
    /// Stop (with a checkpoint) after this step, before `config.steps`.
    pub stop_after: Option<u64>,
    /// Show the progress on stderr ([`crate::train()`]): a bar on a
    /// terminal (with the `cli` feature), plain lines otherwise.
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

/// The training data of a run: its loader, one preprocessed image (the
/// shape of samples), the shape `[C, H, W]` the model denoises (the images',
/// or the latents' in latent mode), its number of classes (0: unconditional
/// or text) and, for text conditioning, the prompts of the sample grids.
pub(crate) struct Data {
    pub(crate) loader: DataLoader,
    pub(crate) probe: Chw,
    pub(crate) model_shape: [i64; 3],
    pub(crate) num_classes: usize,
    pub(crate) prompts: Vec<String>,
}

/// How many captions of the data the sample grids show when the config
/// names no prompts.
const DEFAULT_SAMPLE_PROMPTS: usize = 4;

/// What [`Trainer::build`] makes.
// Built once per run: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ModelSpec<'a> {
    Plain(&'a UNetConfig),
    Text {
        unet: &'a UNetConditionConfig,
        text_encoder: &'a ClipTextConfig,
        tokenizer: ClipTokenizer,
        /// Latent mode's VAE.
        vae: Option<Vae>,
    },
    /// A pipeline's models, loaded ([`TextModel::from_pipeline`]).
    Pretrained(TextModel),
}

/// A training run: model, optimiser, EMA, schedule, and (from
/// [`Trainer::new`]) its data and run folder.
pub struct Trainer {
    pub(crate) config: TrainConfig,
    pub(crate) config_toml: String,
    pub(crate) device: Device,
    pub(crate) model: Model,
    pub(crate) params: Vec<(String, Tensor)>,
    pub(crate) opt: AdamW,
    pub(crate) ema: Ema,
    pub(crate) schedule: Schedule,
    pub(crate) scheduler_config: SchedulerConfig,
    /// The label that means "no class" (label dropout), if class-conditional.
    pub(crate) null_label: Option<i64>,
    pub(crate) dist: Dist,
    pub(crate) data: Option<Data>,
    pub(crate) run: Option<RunDir>,
    /// Optimiser steps taken (or skipped) so far, the resumed ones included.
    pub(crate) step: u64,
    pub(crate) skipped_steps: u64,
    pub(crate) bad_in_a_row: usize,
    pub(crate) resumed: bool,
    pub(crate) stop_after: Option<u64>,
    pub(crate) interrupt: Option<Arc<AtomicBool>>,
    pub(crate) inject_nan_at: Option<u64>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("name", &self.config.name)
            .field("device", &self.device)
            .field("step", &self.step)
            .field("run", &self.run)
            .field("rank", &self.dist.rank())
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// Sets up a run as `config` says: with `opts.resume`, the checkpoint's
    /// config instead (with `opts.steps` as the new total, if given) and its
    /// whole state. Writes the run folder's config, `run.json` and pipeline
    /// files (rank 0).
    pub fn new(config: TrainConfig, opts: &TrainOptions) -> Result<Trainer> {
        let resumed = match &opts.resume {
            Some(path) => Some((path, checkpoint::load(path, Device::Cpu)?)),
            None => None,
        };
        let (config, run_root) = match &resumed {
            Some((path, ck)) => resumed_config(path, ck, opts.steps)?,
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
            let run = RunDir::create(run_root)?;
            run.remove_stale_temps();
            run
        } else {
            RunDir { root: run_root }
        };

        // Data, and what it says the model is conditioned on.
        let mut config = config;
        if let Some(dir) = config.model.text.init_from.clone() {
            match config.model.conditioning {
                Conditioning::Class | Conditioning::None => {
                    return Err(Error::Setting {
                        key: "model.conditioning".into(),
                        reason: "fine-tuning a text-to-image pipeline (model.text.init_from) \
                                 needs text conditioning"
                            .into(),
                    })
                }
                _ => config.model.conditioning = Conditioning::Text,
            }
            if resumed.is_none() {
                let path = dir.join("scheduler").join("scheduler_config.json");
                let scheduler = SchedulerConfig::load(&path).map_err(|e| Error::Setting {
                    key: "model.text.init_from".into(),
                    reason: e.to_string(),
                })?;
                config.noise = config.noise.with_scheduler(&scheduler)?;
            }
        }
        let model_cfg = &config.model;
        let captions = CaptionOptions {
            enabled: match model_cfg.conditioning {
                Conditioning::Text => Some(true),
                Conditioning::Auto => None,
                Conditioning::Class | Conditioning::None => Some(false),
            },
            caption_column: config.data.caption_column.clone(),
        };
        let dataset = config.data.source.open_with_captions(
            &OpenOptions {
                strict: config.data.strict,
                cache: None,
            },
            &captions,
        )?;
        let text_mode = match model_cfg.conditioning {
            Conditioning::Text => true,
            Conditioning::Auto => dataset.has_captions(),
            Conditioning::Class | Conditioning::None => false,
        };
        match model_cfg.conditioning {
            _ if text_mode => config.model.conditioning = Conditioning::Text,
            Conditioning::Class => config.model.class_conditional = true,
            Conditioning::None => config.model.class_conditional = false,
            _ => {}
        }
        let probe = config
            .data
            .preprocess
            .apply_deterministic(dataset.image(0)?);
        let class_names = dataset.class_names().to_vec();
        let num_classes = if config.model.class_conditional && !text_mode {
            class_names.len()
        } else {
            0
        };
        let prompts = if text_mode {
            sample_prompts(&config, &dataset)
        } else {
            Vec::new()
        };
        let start_pos = resumed
            .as_ref()
            .map(|(_, c)| c.position)
            .unwrap_or_default();
        let loader = DataLoader::sharded(
            dataset,
            config.data.preprocess.clone(),
            config.loader(),
            start_pos,
            dist.shard(),
        )?;

        // Fine-tuning: the pipeline's models (on resume, the run's own copies,
        // whose trained weights the checkpoint then restores).
        let mut pretrained = match (&config.model.text.init_from, text_mode) {
            (Some(dir), true) => {
                let source = if resumed.is_some() { &run.root } else { dir };
                let train_te = config.model.text.train_text_encoder;
                Some(TextModel::from_pipeline(source, device, train_te)?)
            }
            _ => None,
        };
        let vae = match (&config.model.text.vae, text_mode, &mut pretrained) {
            (_, _, Some(m)) => m.vae.take(),
            (Some(path), true, None) => Some(load_vae(path, &run.root, resumed.is_some(), device)?),
            _ => None,
        };
        let model_shape = match &vae {
            Some(vae) => latent_shape(vae, &probe)?,
            None => [
                probe.channels as i64,
                probe.height as i64,
                probe.width as i64,
            ],
        };
        let (c, size) = (model_shape[0], model_shape[1]);
        let mut t = if let Some(mut m) = pretrained {
            let unet_in = m.unet.config().in_channels;
            if unet_in != c {
                return Err(Error::Setting {
                    key: "model.text.init_from".into(),
                    reason: format!(
                        "the pipeline's U-Net takes {unet_in} channels; the {} gives {c}",
                        if vae.is_some() {
                            "VAE's latents"
                        } else {
                            "data"
                        }
                    ),
                });
            }
            m.vae = vae;
            if main && resumed.is_none() {
                let dir = config.model.text.init_from.as_deref().unwrap_or(&run.root);
                copy_folder(&dir.join("tokenizer"), &run.root.join("tokenizer"))?;
            }
            Trainer::build(config, ModelSpec::Pretrained(m), device, dist)?
        } else if text_mode {
            let text = &config.model.text;
            let unet_config = text.unet_config(c, size, config.model.dropout)?;
            let text_encoder = text.text_encoder_config()?;
            let max_length = text.max_position_embeddings as usize;
            // Every rank needs the tokenizer; rank 0 writes the run's copy.
            let tokenizer = if main {
                model::write_clip_tokenizer(&run.root.join("tokenizer"), max_length)?
            } else {
                model::clip_tokenizer(max_length)?
            };
            let spec = ModelSpec::Text {
                unet: &unet_config,
                text_encoder: &text_encoder,
                tokenizer,
                vae,
            };
            Trainer::build(config, spec, device, dist)?
        } else {
            let unet_config = config.model.unet_config(c, size, num_classes)?;
            Trainer::build(config, ModelSpec::Plain(&unet_config), device, dist)?
        };
        t.data = Some(Data {
            loader,
            probe,
            model_shape,
            num_classes,
            prompts,
        });
        t.run = Some(run);
        t.stop_after = opts.stop_after;
        t.interrupt = opts.interrupt.clone();
        t.inject_nan_at = opts.inject_nan_at;

        let run = t.run_dir()?;
        if let Some((_, ck)) = &resumed {
            t.restore(ck)?;
            if main {
                run_dir::truncate_metrics(&run.metrics(), t.step)?;
            }
            tracing::info!(step = t.step, run = %run.root.display(), "resumed");
        } else if main {
            tensor::fs::write_bytes_atomic(&run.config(), t.config_toml.as_bytes())?;
        }
        t.sync_replicas()?;
        if main {
            t.write_run_files(&class_names, num_classes)?;
        }
        Ok(t)
    }

    /// The training state of a U-Net of `unet_config` under `config`'s
    /// seed, device, precision, noise, optimiser and EMA settings, with no
    /// data source and no run folder: it trains on the batches it is given
    /// ([`Trainer::step`]), one process, and writes nothing.
    pub fn for_model(config: TrainConfig, unet_config: &UNetConfig) -> Result<Trainer> {
        config.validate()?;
        let device = config.device.resolve()?;
        Trainer::build(
            config,
            ModelSpec::Plain(unet_config),
            device,
            Dist::single(),
        )
    }

    /// Model, optimiser, EMA and schedule, with the model initialised from
    /// the run's seed.
    fn build(
        config: TrainConfig,
        spec: ModelSpec<'_>,
        device: Device,
        dist: Dist,
    ) -> Result<Trainer> {
        tch::manual_seed(tensor::seed::derive_seed(config.seed, "init") as i64);
        let (model, null_label) = match spec {
            ModelSpec::Plain(unet_config) => {
                let mut unet = UNet::new(unet_config, device)?;
                if config.channels_last {
                    unet.to_channels_last();
                }
                // Class `n` of n classes is the null label (`num_class_embeds` = n + 1).
                (
                    Model::Plain(unet),
                    unet_config.num_class_embeds.map(|n| n - 1),
                )
            }
            ModelSpec::Text {
                unet,
                text_encoder,
                tokenizer,
                mut vae,
            } => {
                if let Some(vae) = vae.as_mut() {
                    vae.vs.freeze();
                }
                let unet = ConditionUNet::new(unet, device)?;
                let mut text_encoder = ClipTextModel::new(text_encoder, device, DType::F32)?;
                let train_text_encoder = config.model.text.train_text_encoder;
                if !train_text_encoder {
                    text_encoder.vs.freeze();
                }
                let m = TextModel {
                    unet,
                    text_encoder,
                    tokenizer,
                    train_text_encoder,
                    vae,
                };
                (Model::Text(m), None)
            }
            ModelSpec::Pretrained(m) => (Model::Text(m), None),
        };
        tensor::amp::check(config.mixed_precision, device)?;
        let params = model.trainable_params();
        let opt = AdamW::new(
            params
                .iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
            config.optim.clone(),
        )?;
        let ema = Ema::new(&params, config.ema.clone())?;
        let mut scheduler_config = config.noise.scheduler_config();
        if model.text().is_some_and(|m| m.vae.is_some()) {
            // Latents are not bounded as pixels are: no clipping of the
            // predicted x_0; and `steps_offset` 1, which diffusers'
            // StableDiffusionPipeline otherwise imposes on loading.
            scheduler_config.clip_sample = Some(false);
            scheduler_config.steps_offset = Some(1);
        }
        let schedule = Schedule::from_config(&scheduler_config)?;
        let config_toml = config.to_toml();
        Ok(Trainer {
            config,
            config_toml,
            device,
            model,
            params,
            opt,
            ema,
            schedule,
            scheduler_config,
            null_label,
            dist,
            data: None,
            run: None,
            step: 0,
            skipped_steps: 0,
            bad_in_a_row: 0,
            resumed: false,
            stop_after: None,
            interrupt: None,
            inject_nan_at: None,
        })
    }

    /// The run's config (on resume: the checkpoint's).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The U-Net being trained (its current weights, not the EMA's), when
    /// the run trains a `UNet2DModel` (unconditional or class-conditional);
    /// `None` for text conditioning (see [`Trainer::model`]).
    pub fn unet(&self) -> Option<&UNet> {
        self.model.unet()
    }

    /// The model being trained (its current weights, not the EMA's).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The trained tensors by name, in name order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The weight average used for sampling and export.
    pub fn ema(&self) -> &Ema {
        &self.ema
    }

    /// Steps done so far (taken or skipped), the resumed ones included.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// Steps skipped by the divergence guard so far.
    pub fn skipped_steps(&self) -> u64 {
        self.skipped_steps
    }

    /// Digest of the trained parameters ([`distributed::digest`]).
    pub fn params_digest(&self) -> u64 {
        distributed::digest(&self.params)
    }

    /// Rank 0: the one process that writes files.
    pub fn is_main(&self) -> bool {
        self.dist.is_main()
    }

    /// The run folder, if this trainer has one.
    pub fn run_root(&self) -> Option<&Path> {
        self.run.as_ref().map(|r| r.root.as_path())
    }

    pub(crate) fn run_dir(&self) -> Result<RunDir> {
        self.run.clone().ok_or(Error::Detached("run folder"))
    }

    pub(crate) fn data(&self) -> Result<&Data> {
        self.data.as_ref().ok_or(Error::Detached("data source"))
    }

    /// True when Ctrl-C (or whoever holds the flag) asked the run to stop.
    pub(crate) fn interrupt_requested(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    fn restore(&mut self, ck: &Checkpoint) -> Result<()> {
        let vars = self.model.variables();
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
        self.ema.load(&ck.ema)?;
        self.opt.load_state(&ck.optim, ck.optim_step)?;
        self.step = ck.step;
        self.skipped_steps = ck.skipped_steps;
        self.resumed = true;
        Ok(())
    }

    /// Makes every replica start from rank 0's state: parameters and
    /// buffers, EMA and optimiser moments.
    fn sync_replicas(&self) -> Result<()> {
        if self.dist.world_size() == 1 {
            return Ok(());
        }
        // By name: `variables()` is a HashMap, in a different order in each process.
        let vars = self.model.variables();
        let mut all: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        all.extend(self.ema.shadow().iter().map(|(_, t)| t.shallow_clone()));
        all.extend(self.opt.state().into_values());
        self.dist.broadcast_from_main(&all)
    }

    /// The run's `run.json` and diffusers pipeline files (rank 0).
    fn write_run_files(&self, class_names: &[String], num_classes: usize) -> Result<()> {
        let run = self.run_dir()?;
        run.write_info(&RunInfo {
            class_names: if num_classes > 0 {
                class_names.to_vec()
            } else {
                Vec::new()
            },
            null_label: self.null_label,
            preprocess: Some(self.config.data.preprocess.deterministic()),
            source: Some(self.config.data.source.to_string()),
        })?;
        let pipeline = match self.model.text() {
            None => Pipeline::Ddpm,
            Some(TextModel { vae: None, .. }) => Pipeline::TextPixel,
            Some(TextModel { vae: Some(vae), .. }) => {
                // The frozen VAE, once: a resumed run reads this copy back.
                let dir = run.root.join("vae");
                if !dir.join("config.json").is_file() {
                    vae.save(&dir).map_err(|e| Error::Setting {
                        key: "model.text.vae".into(),
                        reason: format!("writing {}: {e}", dir.display()),
                    })?;
                }
                Pipeline::TextLatent
            }
        };
        run.write_pipeline_files(&self.scheduler_config, pipeline)?;
        Ok(())
    }
}

/// Copies the files of folder `from` into `to` (created), each atomically.
fn copy_folder(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        if let (true, Some(name)) = (path.is_file(), path.file_name()) {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            tensor::fs::write_bytes_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// Latent mode's VAE: on resume the run folder's own copy (so the run goes
/// on with exactly the VAE it started with), else `path` (a `vae/` folder,
/// or a folder holding one).
fn load_vae(path: &Path, run_root: &Path, resumed: bool, device: Device) -> Result<Vae> {
    let own = run_root.join("vae");
    let path = if resumed && own.join("config.json").is_file() {
        own
    } else {
        path.to_path_buf()
    };
    let vae = Vae::load(&path, device).map_err(|e| Error::Setting {
        key: "model.text.vae".into(),
        reason: format!("{}: {e}", path.display()),
    })?;
    tracing::info!(vae = %path.display(), "latent mode");
    Ok(vae)
}

/// `[C, H, W]` of the latents of images shaped like `probe`.
fn latent_shape(vae: &Vae, probe: &Chw) -> Result<[i64; 3]> {
    let cfg = vae.config();
    let bad = |reason: String| Error::Setting {
        key: "model.text.vae".into(),
        reason,
    };
    if probe.channels as i64 != cfg.in_channels {
        return Err(bad(format!(
            "the VAE encodes {}-channel images; the data has {} channels (set \
             data.preprocess.channels)",
            cfg.in_channels, probe.channels
        )));
    }
    let (h, w) = (probe.height as i64, probe.width as i64);
    cfg.check_image_hw(h, w).map_err(|e| {
        bad(format!(
            "{e} (set data.preprocess.resolution to a multiple of {})",
            cfg.downscale_factor()
        ))
    })?;
    let factor = cfg.downscale_factor();
    Ok([cfg.latent_channels, h / factor, w / factor])
}

/// The prompts of a text run's sample grids: the config's, else the first
/// few distinct captions of the data (each image's first).
fn sample_prompts(config: &TrainConfig, dataset: &Dataset) -> Vec<String> {
    let named = &config.model.text.sample_prompts;
    if !named.is_empty() {
        return named.clone();
    }
    let mut prompts: Vec<String> = Vec::new();
    for i in 0..dataset.len() {
        if let Some(c) = dataset.captions(i).first() {
            if !c.is_empty() && !prompts.contains(c) {
                prompts.push(c.clone());
                if prompts.len() == DEFAULT_SAMPLE_PROMPTS {
                    break;
                }
            }
        }
    }
    prompts
}

/// The config saved in a checkpoint (with `steps` as the new total, if
/// given) and the run folder it belongs to.
fn resumed_config(
    path: &Path,
    ck: &Checkpoint,
    steps: Option<u64>,
) -> Result<(TrainConfig, PathBuf)> {
    let mut saved: TrainConfig =
        toml::from_str(&ck.config_toml).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("its config does not parse: {e}"),
        })?;
    if let Some(steps) = steps {
        saved.steps = steps;
    }
    let root = path
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((saved, root))
}
