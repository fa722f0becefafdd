//! The command line of `trainer` and `lmzh train`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::config::TrainConfig;
use crate::distributed::{self, DistOptions};
use crate::launch;
use crate::train::{resolve_resume, train, Summary, TrainOptions};
use crate::Result;

/// Train a diffusion model. With no arguments: the `default` preset (the
/// bundled digits, about ten minutes on a 2-core CPU), into `runs/<name>/`.
///
/// What the model is conditioned on follows the data: an image folder with
/// captions (metadata.jsonl/csv or .txt sidecars) trains text to image, with
/// a CLIP text encoder trained alongside from scratch (`--preset
/// captions-tiny` to try it; then `lmzh txt2img --model RUN_DIR`); class
/// subfolders train a class-conditional model (`model.class_conditional`).
/// Override with `--set model.conditioning=text|class|none`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Text to image:\n  \
    lmzh train --preset captions-tiny\n  \
    lmzh train --preset captioned-digits   # then: lmzh eval prompts --model runs/NAME\n  \
    lmzh train --data path/to/captioned --set data.preprocess.resolution=32 --set data.preprocess.channels=3 \
--set model.text.proportion_empty_prompts=0.1\n  \
    lmzh train --init-from path/to/sd-pipeline --data path/to/captioned --set data.preprocess.resolution=512 \
--set data.preprocess.channels=3 --lr 1e-5   # fine-tune\n  \
    lmzh train --preset captioned-digits --set model.text.vae=runs/VAE_RUN/vae   # latent mode\n  \
    lmzh txt2img --model runs/NAME --prompt \"a red circle\" --sampler dpm++2m --steps 25 --guidance-scale 3")]
pub struct Args {
    /// A TOML config file (see `--print-config` for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start from a preset: default, fashion-mnist, cifar10, captions-tiny
    /// (text to image on bundled captioned shapes), captioned-digits (text
    /// to image on bundled two-digit canvases, about half an hour on a CPU).
    #[arg(long, default_value = "default", conflicts_with = "config")]
    pub preset: String,
    /// Continue a run: a checkpoint file, a run folder, or `latest`.
    #[arg(long, value_name = "CHECKPOINT|RUN_DIR|latest")]
    pub resume: Option<String>,
    /// Run name (folder under --runs-dir).
    #[arg(long)]
    pub name: Option<String>,
    /// Where runs go.
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// Training steps (on --resume: the new total).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Data source: digits, fashion-mnist, mnist, cifar10, a folder, or `idx:IMAGES[,LABELS]`.
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Fine-tune a Stable-Diffusion-style pipeline folder (unet/,
    /// text_encoder/, tokenizer/, scheduler/, vae/) on captioned data, as
    /// diffusers' train_text_to_image.py: the U-Net trains, the VAE and the
    /// text encoder stay frozen (`--set model.text.train_text_encoder=true`
    /// trains it too); the run folder is a pipeline of the same shape.
    #[arg(long, value_name = "PIPELINE_DIR")]
    pub init_from: Option<PathBuf>,
    /// auto, cpu, cuda, cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Compute precision: fp32, or bf16 autocast (f32 master weights; fast
    /// on GPUs and on CPUs with AVX512-BF16 or AMX only).
    #[arg(long, value_name = "fp32|bf16")]
    pub mixed_precision: Option<String>,
    /// Run the U-Net in channels-last memory format.
    #[arg(long)]
    pub channels_last: bool,
    /// Any setting as KEY=VALUE, e.g. `--set optim.warmup_steps=200` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Stop with a checkpoint after this step (the schedule still runs to --steps).
    #[arg(long, value_name = "STEP")]
    pub stop_after: Option<u64>,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// No progress display. (Without it: a progress bar on a terminal, and
    /// a plain progress line every 30 s or tenth of the run when stderr is
    /// not a terminal: step, loss, img/s, ETA, the last FD.)
    #[arg(long)]
    pub quiet: bool,
    /// Train data-parallel in N local processes (c10d: Gloo on the CPU, NCCL
    /// on CUDA); --batch-size is per process. Under torchrun, leave it out.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// Multi-process runs: seconds a rank waits for the others before it
    /// fails (a dead or stuck rank stops the run within this time).
    #[arg(long, value_name = "SECS", default_value_t = distributed::DEFAULT_TIMEOUT.as_secs())]
    pub dist_timeout: u64,
}

impl Args {
    /// The config these arguments describe.
    pub fn resolve_config(&self) -> Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::load(path)?,
            None => TrainConfig::preset(&self.preset)?,
        };
        if c.name.is_empty() && self.config.is_none() {
            c.name = crate::run_dir::timestamped(&self.preset);
        }
        let quoted = |s: &str| format!("{s:?}");
        let mut sets: Vec<String> = Vec::new();
        if let Some(v) = &self.name {
            sets.push(format!("name={}", quoted(v)));
        }
        if let Some(v) = &self.runs_dir {
            sets.push(format!("runs_dir={}", quoted(&v.display().to_string())));
        }
        if let Some(v) = self.steps {
            sets.push(format!("steps={v}"));
        }
        if let Some(v) = self.batch_size {
            sets.push(format!("batch_size={v}"));
        }
        if let Some(v) = self.lr {
            sets.push(format!("optim.learning_rate={v:e}"));
        }
        if let Some(v) = &self.data {
            sets.push(format!("data.source={}", quoted(v)));
        }
        if let Some(v) = &self.device {
            sets.push(format!("device={}", quoted(v)));
        }
        if let Some(v) = self.seed {
            sets.push(format!("seed={v}"));
        }
        if let Some(v) = &self.mixed_precision {
            sets.push(format!("mixed_precision={}", quoted(v)));
        }
        if self.channels_last {
            sets.push("channels_last=true".into());
        }
        if let Some(v) = &self.init_from {
            sets.push(format!(
                "model.text.init_from={}",
                quoted(&v.display().to_string())
            ));
            sets.push("model.text.train_text_encoder=false".into());
        }
        sets.extend(self.set.iter().cloned());
        for s in &sets {
            c.set(s)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Runs the command; `interrupt` is set by a Ctrl-C handler.
    pub fn run(&self, interrupt: Arc<AtomicBool>) -> Result<Option<Summary>> {
        let config = self.resolve_config()?;
        if self.print_config {
            print!("{}", config.to_toml());
            return Ok(None);
        }
        let timeout = Duration::from_secs(self.dist_timeout.max(1));
        if let Some(n) = self.nproc.filter(|&n| n > 1) {
            // This command again, as n processes; each prints its own report.
            launch::launch_local(n, timeout)?;
            return Ok(None);
        }
        let resume = self
            .resume
            .as_deref()
            .map(|r| resolve_resume(r, &config.runs_dir))
            .transpose()?;
        let opts = TrainOptions {
            resume,
            stop_after: self.stop_after,
            progress: !self.quiet,
            interrupt: Some(interrupt),
            inject_nan_at: None,
            steps: self.steps,
            distributed: Some(DistOptions { timeout }),
        };
        train(config, &opts).map(Some)
    }
}

/// Installs a Ctrl-C handler for a training binary and returns its flag:
/// the first Ctrl-C asks the loop to stop after the current step and write a
/// checkpoint; a second one exits at once.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    use std::sync::atomic::Ordering;
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    let handler = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step and writing a checkpoint (Ctrl-C again to abort)");
    });
    if let Err(e) = handler {
        tracing::warn!("no Ctrl-C handler: {e}");
    }
    interrupt
}

/// Prints what a finished run left behind (ranks other than 0: one line).
pub fn report(s: &Summary) {
    if s.rank != 0 {
        println!(
            "rank {} of {}: trained {} steps, parameters digest {:016x}",
            s.rank, s.world_size, s.steps, s.params_digest
        );
        return;
    }
    let loss = s
        .last_loss
        .map(|l| format!("{l:.4}"))
        .unwrap_or_else(|| "n/a".into());
    if s.interrupted {
        println!("interrupted at step {}: checkpoint written", s.steps);
    }
    println!(
        "trained {} steps, last loss {loss}, {:.0} img/s, {} skipped step(s), {} unreadable file(s)",
        s.steps,
        s.images_per_second * s.world_size as f64,
        s.skipped_steps,
        s.skipped_files
    );
    if s.world_size > 1 {
        println!(
            "rank 0 of {}: parameters digest {:016x} (the same on every rank)",
            s.world_size, s.params_digest
        );
    }
    println!("run folder: {}", s.run_dir.display());
    println!("  samples:  {}", s.run_dir.join("samples").display());
    if s.run_dir.join("text_encoder").is_dir() {
        println!(
            "  sample more: lmzh txt2img --model {} --prompt \"...\" --sampler dpm++2m --steps 25 --guidance-scale 3",
            s.run_dir.display()
        );
    } else {
        println!(
            "  sample more: cargo run -p sampler -- --model {} --sampler dpm++2m --steps 25 --guidance-scale 2",
            s.run_dir.display()
        );
    }
}
