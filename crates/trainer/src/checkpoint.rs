//! Checkpoints: one safetensors file per save, holding everything a run needs
//! to continue bit-identically.
//!
//! Tensors: `model.NAME` (every weight of the U-Net), `ema.NAME` (the
//! averaged parameters), `optim.exp_avg.NAME` and `optim.exp_avg_sq.NAME`.
//! Metadata: the step, the optimiser step, the data position, the count of
//! skipped steps and the resolved config. The random numbers of step `s` come
//! from a generator seeded by (seed, s), so the seed and step stand for the
//! generator state. Files are written atomically (temp + rename): a run killed
//! mid-save keeps its previous checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use data_pipeline::loader::Position;
use tch::{Device, Tensor};
use tensor::safetensors::Metadata;

use crate::{Error, Result};

/// Format marker in the metadata.
const FORMAT: &str = "lmzh-train-checkpoint-v1";

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub step: u64,
    pub optim_step: u64,
    pub position: Position,
    pub skipped_steps: u64,
    pub config_toml: String,
    pub model: BTreeMap<String, Tensor>,
    pub ema: BTreeMap<String, Tensor>,
    pub optim: BTreeMap<String, Tensor>,
}

/// What to write.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub step: u64,
    pub optim_step: u64,
    pub position: Position,
    pub skipped_steps: u64,
    pub config_toml: &'a str,
    pub model: &'a [(String, Tensor)],
    pub ema: &'a [(String, Tensor)],
    pub optim: &'a BTreeMap<String, Tensor>,
}

/// `checkpoints/step-000123.safetensors`.
pub fn file_name(step: u64) -> String {
    format!("step-{step:06}.safetensors")
}

/// Writes a snapshot to `path` atomically.
pub fn save(path: &Path, s: &Snapshot<'_>) -> Result<()> {
    let mut tensors: Vec<(String, &Tensor)> = Vec::new();
    tensors.extend(s.model.iter().map(|(n, t)| (format!("model.{n}"), t)));
    tensors.extend(s.ema.iter().map(|(n, t)| (format!("ema.{n}"), t)));
    tensors.extend(s.optim.iter().map(|(n, t)| (format!("optim.{n}"), t)));
    let detached: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(n, t)| (n, t.detach())).collect();
    let refs: Vec<(&str, &Tensor)> = detached.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = Metadata::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), s.step.to_string()),
        ("optim_step".to_string(), s.optim_step.to_string()),
        ("epoch".to_string(), s.position.epoch.to_string()),
        ("index".to_string(), s.position.index.to_string()),
        ("skipped_steps".to_string(), s.skipped_steps.to_string()),
        ("config".to_string(), s.config_toml.to_string()),
    ]);
    tensor::safetensors::save(path, &refs, Some(&meta))?;
    Ok(())
}

/// Loads a checkpoint onto `device`.
pub fn load(path: &Path, device: Device) -> Result<Checkpoint> {
    let (tensors, meta) = tensor::safetensors::load_with_metadata(path, device)?;
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "metadata format is {:?}, expected {FORMAT:?}",
            meta.get("format")
        )));
    }
    let num = |key: &str| -> Result<u64> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("metadata {key:?} missing or not a number")))
    };
    let mut model = BTreeMap::new();
    let mut ema = BTreeMap::new();
    let mut optim = BTreeMap::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("ema.") {
            ema.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("optim.") {
            optim.insert(n.to_string(), t);
        } else {
            return Err(bad(format!("unexpected tensor {name:?}")));
        }
    }
    Ok(Checkpoint {
        step: num("step")?,
        optim_step: num("optim_step")?,
        position: Position {
            epoch: num("epoch")?,
            index: num("index")? as usize,
        },
        skipped_steps: num("skipped_steps")?,
        config_toml: meta
            .get("config")
            .cloned()
            .ok_or_else(|| bad("no config in metadata".into()))?,
        model,
        ema,
        optim,
    })
}

/// Checkpoints in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let step = name
                .strip_prefix("step-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()?;
            Some((step, p))
        })
        .collect();
    out.sort();
    out
}

/// Removes all but the newest `keep` checkpoints of `dir`.
pub fn prune(dir: &Path, keep: usize) {
    let all = list(dir);
    for (_, p) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!("could not remove old checkpoint {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn round_trip_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let w = Tensor::randn([3, 2], (Kind::Float, Device::Cpu));
        let model = vec![("conv.weight".to_string(), w.shallow_clone())];
        let ema = vec![("conv.weight".to_string(), &w * 2.0)];
        let optim = BTreeMap::from([("exp_avg.conv.weight".to_string(), &w * 3.0)]);
        for step in [5, 10, 15] {
            let snap = Snapshot {
                step,
                optim_step: step,
                position: Position {
                    epoch: 1,
                    index: 64,
                },
                skipped_steps: 1,
                config_toml: "steps = 20\n",
                model: &model,
                ema: &ema,
                optim: &optim,
            };
            save(&dir.path().join(file_name(step)), &snap).unwrap();
        }
        prune(dir.path(), 2);
        let steps: Vec<u64> = list(dir.path()).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [10, 15]);
        let c = load(&dir.path().join(file_name(15)), Device::Cpu).unwrap();
        assert_eq!(
            (c.step, c.position, c.skipped_steps),
            (
                15,
                Position {
                    epoch: 1,
                    index: 64
                },
                1
            )
        );
        assert!(c.model["conv.weight"].equal(&w));
        assert!(c.ema["conv.weight"].equal(&(&w * 2.0)));
        assert_eq!(c.config_toml, "steps = 20\n");
    }

    #[test]
    fn a_foreign_safetensors_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weights.safetensors");
        tensor::safetensors::save(
            &p,
            &[("x", &Tensor::ones([1], (Kind::Float, Device::Cpu)))],
            None,
        )
        .unwrap();
        let err = load(&p, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("weights.safetensors") && err.contains("not a training checkpoint"),
            "{err}"
        );
    }
}
