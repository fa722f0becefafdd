//! The run directory `runs/<name>/` and what goes in it:
//!
//! - `config.toml`: the resolved config, written before step 0;
//! - `run.json`: what sampling needs besides the model (class names, the
//!   null label, preprocessing);
//! - `metrics.jsonl`: one JSON object per logged step;
//! - `loss.png`: the loss curve, redrawn as training goes, and beside it the
//!   FD over the steps once evaluation has run;
//! - `samples/step-XXXXXX.png`: grids sampled from fixed noise;
//! - `checkpoints/step-XXXXXX.safetensors`: full training state (files are
//!   written atomically; the temporary files of a killed write are removed
//!   at the next start or resume, [`RunDir::remove_stale_temps`]);
//! - `model_index.json`, `unet/`, `scheduler/`: a diffusers `DDPMPipeline`
//!   export of the EMA model, which `sampler --model RUN_DIR` and diffusers
//!   both load;
//! - for text conditioning, a text-to-image pipeline in pixel space
//!   instead: `model_index.json` (`StableDiffusionPipeline` with no VAE),
//!   `unet/` (`UNet2DConditionModel`), `text_encoder/` (`CLIPTextModel`),
//!   `tokenizer/` (`CLIPTokenizer`) and `scheduler/`, which
//!   `lmzh txt2img --model RUN_DIR` loads and whose components diffusers and
//!   transformers load one by one; in latent mode (`model.text.vae`) also
//!   `vae/` (`AutoencoderKL`, the frozen VAE, written once) and a
//!   `model_index.json` naming it: a whole `StableDiffusionPipeline`.

use std::io::Write;
use std::path::{Path, PathBuf};

use schedule::SchedulerConfig;

use crate::{Error, Result};

/// The diffusers version whose file layout the export follows.
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// `run.json`: the sampling-time facts about a run's data, the type the
/// sampler's [`sampler::pipeline::Pipeline`] reads back.
pub use sampler::pipeline::RunInfo;

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates the folders of a run.
    pub fn create(root: PathBuf) -> Result<Self> {
        for sub in ["samples", "checkpoints"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
        Ok(RunDir { root })
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    pub fn loss_plot(&self) -> PathBuf {
        self.root.join("loss.png")
    }

    /// Removes the temporary files that writes killed midway (`kill -9`, a
    /// power cut) left in the run folder and its subfolders, when their
    /// writer no longer runs (see [`tensor::fs::remove_stale_temps`]); a
    /// live writer's are kept. Logs and returns what was removed.
    pub fn remove_stale_temps(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for dir in [
            self.root.clone(),
            self.checkpoints(),
            self.samples(),
            self.root.join("unet"),
            self.root.join("scheduler"),
            self.root.join("text_encoder"),
            self.root.join("tokenizer"),
        ] {
            removed.extend(tensor::fs::remove_stale_temps(&dir));
        }
        for path in &removed {
            tracing::warn!(
                "removed {}, left by a write that was interrupted",
                path.display()
            );
        }
        removed
    }

    /// Writes `run.json`.
    pub fn write_info(&self, info: &RunInfo) -> Result<()> {
        let text = serde_json::to_string_pretty(info).expect("serialisable");
        tensor::fs::write_bytes_atomic(&self.root.join("run.json"), text.as_bytes())?;
        Ok(())
    }

    /// Writes `model_index.json` and `scheduler/scheduler_config.json` of the
    /// diffusers export (the model folders are written by the models
    /// themselves): a `DDPMPipeline`, or for a text model a
    /// `StableDiffusionPipeline` (with `vae` null in pixel space).
    pub fn write_pipeline_files(&self, scheduler: &SchedulerConfig, kind: Pipeline) -> Result<()> {
        let index = if kind != Pipeline::Ddpm {
            let vae = if kind == Pipeline::TextLatent {
                serde_json::json!(["diffusers", "AutoencoderKL"])
            } else {
                serde_json::json!([null, null])
            };
            serde_json::json!({
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": DIFFUSERS_VERSION,
                "feature_extractor": [null, null],
                "image_encoder": [null, null],
                "requires_safety_checker": false,
                "safety_checker": [null, null],
                "scheduler": ["diffusers", "DDPMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": vae,
            })
        } else {
            serde_json::json!({
                "_class_name": "DDPMPipeline",
                "_diffusers_version": DIFFUSERS_VERSION,
                "scheduler": ["diffusers", "DDPMScheduler"],
                "unet": ["diffusers", "UNet2DModel"],
            })
        };
        let text = serde_json::to_string_pretty(&index).expect("serialisable");
        tensor::fs::write_bytes_atomic(&self.root.join("model_index.json"), text.as_bytes())?;
        let dir = self.root.join("scheduler");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut cfg = scheduler.clone();
        cfg.extra
            .insert("_class_name".into(), "DDPMScheduler".into());
        cfg.extra
            .insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
        cfg.save(dir.join("scheduler_config.json"))?;
        Ok(())
    }
}

/// What `model_index.json` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipeline {
    /// A `UNet2DModel` and its scheduler.
    Ddpm,
    /// Text to image in pixel space (no `vae/`).
    TextPixel,
    /// Text to image in a VAE's latent space (`vae/` beside the U-Net).
    TextLatent,
}

/// Reads the (step, loss) pairs of `metrics.jsonl`.
pub fn read_losses(path: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

/// The (step, FD) pairs of the evaluations in `metrics.jsonl`, and the
/// feature net's label (`DIGITS`) of the last one.
pub fn read_fd(path: &Path) -> (Vec<(u64, f64)>, Option<String>) {
    let mut label = None;
    let points = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let eval = v.get("eval")?;
            let point = (v.get("step")?.as_u64()?, eval.get("fd")?.as_f64()?);
            if let Some(l) = eval.get("feature_net").and_then(|l| l.as_str()) {
                label = Some(l.to_string());
            }
            Some(point)
        })
        .collect();
    (points, label)
}

/// Keeps only the lines of `metrics.jsonl` up to `step` (on resume, the
/// lines a crashed run wrote after its last checkpoint are dropped).
pub fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step")?.as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    tensor::fs::write_bytes_atomic(path, kept.as_bytes())?;
    Ok(())
}

/// Appends one JSON line to `metrics.jsonl`.
pub fn append_metrics(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(f, "{value}").map_err(|e| Error::io(path, e))
}

/// A run name from the current UTC time: `default-20261123-071502`.
pub fn timestamped(prefix: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // civil-from-days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{prefix}-{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_append_read_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        for step in 0..5 {
            append_metrics(
                &p,
                &serde_json::json!({"step": step, "loss": step as f64 / 10.0}),
            )
            .unwrap();
        }
        assert_eq!(read_losses(&p).len(), 5);
        truncate_metrics(&p, 2).unwrap();
        assert_eq!(read_losses(&p), [(0, 0.0), (1, 0.1), (2, 0.2)]);
        assert_eq!(read_fd(&p), (vec![], None));
        append_metrics(
            &p,
            &serde_json::json!({"step": 2, "eval": {"feature_net": "DIGITS", "fd": 12.5}}),
        )
        .unwrap();
        assert_eq!(read_fd(&p), (vec![(2, 12.5)], Some("DIGITS".into())));
        assert_eq!(read_losses(&p).len(), 3, "evaluation lines hold no loss");
    }

    #[test]
    fn timestamped_names_look_right() {
        let n = timestamped("default");
        assert!(
            n.starts_with("default-20") && n.len() == "default-20261123-071502".len(),
            "{n}"
        );
    }
}
