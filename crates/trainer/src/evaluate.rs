//! In-training evaluation: every `eval.every` steps, sample `eval.num_images`
//! images from fixed noise with a fast solver (EMA weights), compute FD, KID,
//! precision/recall and density/coverage against a cached reference set
//! (see the `eval` crate), log them to `metrics.jsonl` and the progress line,
//! and keep the checkpoint with the lowest FD as `checkpoints/best.safetensors`.

use std::path::Path;

use data_pipeline::preprocess::Chw;
use data_pipeline::source::{SourceSpec, Split};
use eval::{Extractor, Reference, Report};
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use unet::UNet;

use crate::config::{EvalConfig, TrainConfig};
use crate::preview::{self, SolverSpec};
use crate::{Error, Result};

/// Images sampled per model batch.
const CHUNK: i64 = 250;

/// Everything an evaluation needs, prepared once before step 0.
#[derive(Debug)]
pub struct Evaluator {
    config: EvalConfig,
    extractor: Extractor,
    reference: Reference,
    noise: Tensor,
    labels: Option<Tensor>,
    /// The step and FD of the best evaluation so far.
    pub best: Option<(u64, f64)>,
}

/// The reference data of `eval.reference = "auto"`: the held-out split of a
/// benchmark set, else the training data itself.
pub fn auto_reference(train: &SourceSpec) -> SourceSpec {
    match train {
        SourceSpec::FashionMnist(_) => SourceSpec::FashionMnist(Split::Test),
        SourceSpec::Mnist(_) => SourceSpec::Mnist(Split::Test),
        SourceSpec::Cifar10 { dir, .. } => SourceSpec::Cifar10 {
            dir: dir.clone(),
            split: Split::Test,
        },
        other => other.clone(),
    }
}

impl Evaluator {
    /// Prepares evaluation for a run, or `None` when it is off. With
    /// `feature_net = "auto"` and no bundled net for the data, evaluation is
    /// switched off with a warning that says how to turn it on.
    pub fn new(
        config: &TrainConfig,
        probe: &Chw,
        num_classes: usize,
        device: Device,
    ) -> Result<Option<Self>> {
        let ec = &config.eval;
        if ec.every == 0 {
            return Ok(None);
        }
        let setting = |key: &str, reason: String| Error::Setting {
            key: key.into(),
            reason,
        };
        let reference_spec = match ec.reference.as_str() {
            "auto" => auto_reference(&config.data.source),
            s => eval::reference::parse_spec(s)
                .map_err(|e| setting("eval.reference", e.to_string()))?,
        };
        let extractor = match ec.feature_net.as_str() {
            "auto" => match Extractor::for_reference(&reference_spec, device) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(
                        "in-training evaluation is off: {e} (then set eval.feature_net, or \
                         eval.every = 0 to silence this)"
                    );
                    return Ok(None);
                }
            },
            path => Extractor::open(path, device, Default::default())
                .map_err(|e| setting("eval.feature_net", e.to_string()))?,
        };
        let limit = (ec.reference_limit > 0).then_some(ec.reference_limit);
        let cache = eval::reference::default_cache_dir();
        let reference =
            Reference::load_or_compute(&reference_spec, limit, &extractor, Some(&cache))?;
        tracing::info!(
            reference = %reference.spec,
            images = reference.len(),
            feature_net = %extractor.describe(),
            "evaluation reference"
        );

        let m = ec.num_images as i64;
        // Every training step reseeds libtorch's generator from (seed, step),
        // so this draw does not move the training stream.
        tch::manual_seed(tensor::seed::derive_seed(config.seed, "eval-noise") as i64);
        let shape = [
            m,
            probe.channels as i64,
            probe.height as i64,
            probe.width as i64,
        ];
        let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu));
        let labels = (num_classes > 0)
            .then(|| Tensor::arange(m, (Kind::Int64, Device::Cpu)).remainder(num_classes as i64));
        Ok(Some(Evaluator {
            config: ec.clone(),
            extractor,
            reference,
            noise,
            labels,
            best: None,
        }))
    }

    /// The label of the metrics (`DIGITS` in `FD-DIGITS`).
    pub fn label(&self) -> &str {
        self.extractor.label()
    }

    /// Samples the fixed noise with `unet` and compares with the reference.
    pub fn evaluate(
        &self,
        unet: &UNet,
        scheduler: &SchedulerConfig,
        null_label: Option<i64>,
        device: Device,
    ) -> Result<Report> {
        let spec = SolverSpec {
            sampler: &self.config.sampler,
            steps: self.config.steps,
            guidance_scale: self.config.guidance_scale,
        };
        let n = self.noise.size()[0];
        let mut images = Vec::new();
        for start in (0..n).step_by(CHUNK as usize) {
            let len = CHUNK.min(n - start);
            let noise = self.noise.narrow(0, start, len).to_device(device);
            let labels = self
                .labels
                .as_ref()
                .map(|l| l.narrow(0, start, len).to_device(device));
            let x = preview::sample(unet, scheduler, &noise, labels.as_ref(), null_label, spec)?;
            images.push(x.to_device(Device::Cpu));
        }
        let images = Tensor::cat(&images, 0);
        // 20 KID subsets instead of 100: a fifth of the cost, and the numbers
        // compare steps of one run, not papers.
        let opts = eval::Options {
            kid_subsets: 20,
            ..eval::Options::default()
        };
        Ok(self.reference.evaluate(&self.extractor, &images, &opts)?)
    }

    /// Records a result; true when it is the best so far (lowest FD).
    pub fn record(&mut self, step: u64, report: &Report) -> bool {
        let better = self.best.is_none_or(|(_, fd)| report.fd < fd);
        if better {
            self.best = Some((step, report.fd));
        }
        better
    }

    /// The metrics line of an evaluation.
    pub fn metrics_line(&self, step: u64, report: &Report, best: bool) -> serde_json::Value {
        serde_json::json!({
            "step": step,
            "eval": {
                "feature_net": self.label(),
                "reference": self.reference.spec,
                "num_images": self.config.num_images,
                "sampler": self.config.sampler,
                "sampler_steps": self.config.steps,
                "fd": report.fd,
                "kid": report.kid_mean,
                "kid_std": report.kid_std,
                "precision": report.precision,
                "recall": report.recall,
                "density": report.density,
                "coverage": report.coverage,
            },
            "best": best,
        })
    }
}

/// The best (step, FD) among the evaluations already in `metrics.jsonl`, so
/// a resumed run keeps comparing against them.
pub fn best_in_metrics(path: &Path) -> Option<(u64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_u64()?, v["eval"]["fd"].as_f64()?)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reference_prefers_held_out_splits() {
        let fm = SourceSpec::FashionMnist(Split::Train);
        assert_eq!(auto_reference(&fm), SourceSpec::FashionMnist(Split::Test));
        assert_eq!(auto_reference(&SourceSpec::Digits), SourceSpec::Digits);
    }

    #[test]
    fn best_is_read_back_from_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        std::fs::write(
            &p,
            "{\"step\":10,\"loss\":0.5}\n{\"step\":20,\"eval\":{\"fd\":9.5}}\n\
             {\"step\":40,\"eval\":{\"fd\":7.25}}\n{\"step\":60,\"eval\":{\"fd\":8.0}}\n",
        )
        .unwrap();
        assert_eq!(best_in_metrics(&p), Some((40, 7.25)));
        assert_eq!(best_in_metrics(&dir.path().join("none")), None);
    }
}
