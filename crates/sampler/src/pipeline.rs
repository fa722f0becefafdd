//! Model folders, resolved in one place: a diffusers pipeline folder
//! (`model_index.json` with its components `unet/`, `scheduler/`, and
//! room for `vae/`, `text_encoder/`, `tokenizer/`), a bare model folder
//! (`config.json` + weights), or a trainer run folder (a pipeline folder
//! plus its typed `run.json`: class names, the null label, the
//! preprocessing of its data).
//!
//! ```no_run
//! use sampler::pipeline::Pipeline;
//!
//! let pipe = Pipeline::open("assets/models/digits")?;
//! let unet = pipe.load_unet(tch::Device::Cpu)?;
//! println!("{:?} classes, null label {:?}", pipe.class_names(), pipe.null_label(unet.config()));
//! # Ok::<(), sampler::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use data_pipeline::preprocess::Preprocess;
use schedule::SchedulerConfig;
use serde::{Deserialize, Serialize};
use tch::Device;
use unet::config::ClassEmbedding;
use unet::{UNet, UNetConfig};

use crate::input::InputSpec;
use crate::{Error, Result};

/// diffusers' `model_index.json`: the pipeline class and its components,
/// each `[library, class]` (or `null` for an absent optional one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelIndex {
    /// The pipeline class (`DDPMPipeline`, `StableDiffusionPipeline`, ...).
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    /// The diffusers version that wrote it.
    #[serde(
        rename = "_diffusers_version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub diffusers_version: Option<String>,
    /// Every other key: components (`"unet": ["diffusers", "UNet2DModel"]`)
    /// and pipeline options (`"requires_safety_checker": false`).
    #[serde(flatten)]
    pub entries: BTreeMap<String, serde_json::Value>,
}

impl ModelIndex {
    /// The `(library, class)` of component `name`, when the index has one.
    pub fn component(&self, name: &str) -> Option<(&str, &str)> {
        match self.entries.get(name)?.as_array()?.as_slice() {
            [lib, class] => Some((lib.as_str()?, class.as_str()?)),
            _ => None,
        }
    }
}

/// A trainer run's `run.json`: what the weights alone do not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    /// Class names by label; empty for unconditional models.
    pub class_names: Vec<String>,
    /// The label that means "no class" (classifier-free guidance), if any.
    pub null_label: Option<i64>,
    /// The preprocessing the model was trained with.
    pub preprocess: Option<Preprocess>,
    /// The data source it was trained on.
    pub source: Option<String>,
}

/// A resolved model folder.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// The folder given.
    pub root: PathBuf,
    /// `model_index.json`, for pipeline folders.
    pub model_index: Option<ModelIndex>,
    /// `run.json` (in the folder, or beside a pipeline's `unet/`).
    pub run: Option<RunInfo>,
    /// The scheduler config (see [`scheduler_config_for`]).
    pub scheduler: SchedulerConfig,
    /// Where the scheduler config was read; `None`: the default DDPM one.
    pub scheduler_path: Option<PathBuf>,
    unet_dir: PathBuf,
}

impl Pipeline {
    /// Resolves `dir`: a pipeline folder, a pipeline's `unet/`, or a bare
    /// U-Net folder. Errors name the folder and what is missing.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let folder_error = |reason: String| Error::ModelFolder {
            path: root.clone(),
            reason,
        };
        if !root.is_dir() {
            return Err(folder_error("no such folder".into()));
        }
        let index_path = root.join("model_index.json");
        let model_index = if index_path.is_file() {
            let text = read(&index_path)?;
            Some(
                serde_json::from_str::<ModelIndex>(&text).map_err(|e| Error::ModelFolder {
                    path: index_path.clone(),
                    reason: format!("not a diffusers model_index.json: {e}"),
                })?,
            )
        } else {
            None
        };
        let unet_dir = if root.join("unet").join("config.json").is_file() {
            root.join("unet")
        } else if root.join("config.json").is_file() {
            root.clone()
        } else {
            return Err(folder_error(
                "neither unet/config.json (a diffusers pipeline folder) nor config.json (a \
                 model folder) is here"
                    .into(),
            ));
        };
        let (scheduler, scheduler_path) = find_scheduler_config(&root)?;
        Ok(Pipeline {
            run: read_run_info(&root)?,
            model_index,
            scheduler,
            scheduler_path,
            unet_dir,
            root,
        })
    }

    /// The folder of the denoising U-Net (`unet/`, or the folder itself).
    pub fn unet_dir(&self) -> &Path {
        &self.unet_dir
    }

    /// The folder of pipeline component `name` (`vae`, `text_encoder`,
    /// `tokenizer`, ...), when it exists.
    pub fn component_dir(&self, name: &str) -> Option<PathBuf> {
        let dir = self.root.join(name);
        dir.is_dir().then_some(dir)
    }

    /// Loads the U-Net's weights onto `device`.
    pub fn load_unet(&self, device: Device) -> Result<UNet> {
        UNet::load(&self.unet_dir, device).map_err(|e| match e {
            unet::Error::Io { .. } => Error::ModelFolder {
                path: self.root.clone(),
                reason: e.to_string(),
            },
            other => Error::Unet(other),
        })
    }

    /// Class names by label (from `run.json`; empty when unknown).
    pub fn class_names(&self) -> &[String] {
        self.run.as_ref().map_or(&[], |r| &r.class_names)
    }

    /// The unconditional label of a class-conditional U-Net: `run.json`'s
    /// `null_label`, else the last row of its class table
    /// (`num_class_embeds - 1`, the label a trainer with label dropout
    /// reserves for "no class"); `None` for other models.
    pub fn null_label(&self, unet: &UNetConfig) -> Option<i64> {
        let Ok(Some(ClassEmbedding::Table(k))) = unet.class_embedding() else {
            return None;
        };
        Some(
            self.run
                .as_ref()
                .and_then(|r| r.null_label)
                .unwrap_or(k - 1),
        )
    }

    /// How image files become inputs of a model of `chw` (the run's
    /// preprocessing, completed from the model).
    pub fn input_spec(&self, chw: [i64; 3]) -> Result<InputSpec> {
        InputSpec::new(chw, self.run.as_ref().and_then(|r| r.preprocess.as_ref()))
    }
}

/// The scheduler config that goes with a model folder: the pipeline's
/// `scheduler/scheduler_config.json` (also when `dir` is the pipeline's
/// `unet/`), else diffusers' default DDPM training schedule.
pub fn scheduler_config_for(dir: &Path) -> Result<SchedulerConfig> {
    Ok(find_scheduler_config(dir)?.0)
}

fn find_scheduler_config(dir: &Path) -> Result<(SchedulerConfig, Option<PathBuf>)> {
    let candidates = [
        dir.join("scheduler").join("scheduler_config.json"),
        dir.join("scheduler_config.json"),
        dir.join("..")
            .join("scheduler")
            .join("scheduler_config.json"),
    ];
    for path in candidates {
        if path.is_file() {
            tracing::debug!(path = %path.display(), "scheduler config");
            return Ok((SchedulerConfig::load(&path)?, Some(path)));
        }
    }
    if dir.join("model_index.json").is_file() {
        tracing::warn!(
            "{}: pipeline folder without scheduler/scheduler_config.json; using the default DDPM schedule",
            dir.display()
        );
    }
    Ok((default_scheduler_config()?, None))
}

/// diffusers' `DDPMScheduler()` training schedule, with every other key
/// absent (so each solver takes its own defaults for them).
pub fn default_scheduler_config() -> Result<SchedulerConfig> {
    Ok(SchedulerConfig::from_json_str(
        r#"{"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}"#,
    )?)
}

/// The typed `run.json` in `dir` or its parent (a pipeline's `unet/`).
pub fn read_run_info(dir: &Path) -> Result<Option<RunInfo>> {
    for path in [dir.join("run.json"), dir.join("..").join("run.json")] {
        if path.is_file() {
            let text = read(&path)?;
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::ModelFolder {
                    path,
                    reason: format!("not a valid run.json: {e}"),
                });
        }
    }
    Ok(None)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        error: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/digits")
    }

    #[test]
    fn the_bundled_model_resolves_as_a_run_pipeline() {
        let p = Pipeline::open(digits()).unwrap();
        let index = p.model_index.as_ref().unwrap();
        assert_eq!(index.class_name, "DDPMPipeline");
        assert_eq!(index.component("unet"), Some(("diffusers", "UNet2DModel")));
        assert_eq!(index.component("vae"), None);
        assert_eq!(p.unet_dir(), digits().join("unet"));
        assert!(p.scheduler_path.is_some());
        assert_eq!(p.class_names().len(), 10);
        let run = p.run.as_ref().unwrap();
        assert_eq!(run.null_label, Some(10));
        assert!(p.component_dir("scheduler").is_some());
        assert!(p.component_dir("vae").is_none());
        // Opened from its unet/ folder, the run and the scheduler are found.
        let inner = Pipeline::open(digits().join("unet")).unwrap();
        assert_eq!(inner.run, p.run);
        assert_eq!(inner.scheduler, p.scheduler);
    }

    #[test]
    fn null_label_prefers_run_json_then_the_last_table_row() {
        let cfg: UNetConfig =
            serde_json::from_str(r#"{"num_class_embeds": 12, "class_embed_type": null}"#).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let bare = Pipeline::open(dir.path()).unwrap();
        assert!(bare.model_index.is_none() && bare.run.is_none());
        assert!(bare.scheduler_path.is_none());
        assert_eq!(bare.null_label(&cfg), Some(11));
        std::fs::write(dir.path().join("run.json"), r#"{"null_label": 3}"#).unwrap();
        assert_eq!(
            Pipeline::open(dir.path()).unwrap().null_label(&cfg),
            Some(3)
        );
        let unconditional: UNetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.null_label(&unconditional), None);
    }

    #[test]
    fn bad_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Pipeline::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json"), "{e}");
        let e = Pipeline::open(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such folder"), "{e}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("run.json"), "[1]").unwrap();
        let e = Pipeline::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("run.json"), "{e}");
        std::fs::write(dir.path().join("run.json"), "{}").unwrap();
        std::fs::write(dir.path().join("model_index.json"), "{").unwrap();
        let e = Pipeline::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("model_index.json"), "{e}");
    }
}
