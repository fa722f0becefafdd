//! `lmzh eval`: sample-quality metrics from the command line, and
//! `lmzh eval train-features`: training a feature net.
//!
//! ```text
//! lmzh eval --samples DIR|FILE.safetensors|SPEC --reference fashion-mnist-test
//!           [--feature-net auto|fmnist|digits|NET.safetensors|MODEL.pt]
//!           [--num-samples N] [--reference-limit N] [--degrade noise=0.1|blur=1]
//!           [--kid-subsets 100] [--kid-subset-size 1000] [--json OUT.json]
//! lmzh eval train-features --data fashion-mnist --name FMNIST --out NET.safetensors
//! lmzh eval prompts --model runs/RUN [--guidance-scale 3] [--images-per-prompt 8] [--json OUT.json]
//! ```
//!
//! `lmzh eval prompts` draws its samples through a [`PromptSampler`] that
//! the binary provides (this crate does not load text-to-image pipelines).

use std::fmt;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use tensor::DeviceSpec;

use crate::extractor::{Extractor, TorchScriptInput};
use crate::metrics::{Options, Report};
use crate::prompts::{self, PairScorer, PromptOptions, PromptReport, PromptSampler};
use crate::reference::{self, input_of, Reference};
use crate::train_net::{self, TrainNetOptions};
use crate::{images, Error, Result};

/// Metrics of generated samples against a real data set, on the features of
/// a small classifier trained on that kind of data (reported as `FD-<NET>`,
/// `KID-<NET>`, ...: not comparable with Inception FID).
///
/// Example: `lmzh sample --model runs/RUN --num-images 1000 --out samples/`
/// then `lmzh eval --samples samples/ --reference fashion-mnist-test`.
#[derive(Debug, Clone, ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// Subcommands of `lmzh eval`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Train a feature net (a small CNN classifier) on labelled data.
    TrainFeatures(TrainFeaturesArgs),
    /// Prompt following of a text-to-image run trained on `captioned-digits`:
    /// samples "a L to the left of a R" for held-out and seen pairs and
    /// classifies the two halves of each sample with the bundled digits net.
    Prompts(PromptsArgs),
}

/// The flags of `lmzh eval prompts`.
///
/// Example: `lmzh eval prompts --model runs/captioned-digits-DATE --json p.json`;
/// `--guidance-scale 1` (no guidance) against the default shows what
/// guidance adds.
#[derive(Debug, Clone, ClapArgs)]
pub struct PromptsArgs {
    /// A text-to-image run folder trained on `captioned-digits` (what
    /// `lmzh train --preset captioned-digits` writes), 32 x 32 grey.
    #[arg(long, value_name = "RUN_DIR")]
    pub model: PathBuf,

    /// Classifier-free guidance scale (1: none), against the empty prompt.
    #[arg(long, default_value_t = 3.0)]
    pub guidance_scale: f64,

    /// Samples per prompt; there are 20 prompts (10 held-out pairs, 10 seen).
    #[arg(long, default_value_t = 8)]
    pub images_per_prompt: usize,

    /// Which pairs: `both` (every held-out pair and ten seen ones, each
    /// digit once per side), `held-out` or `seen`.
    #[arg(long, default_value = "both", value_parser = ["both", "held-out", "seen"])]
    pub pairs: String,

    /// The solver; any of `lmzh sample --sampler`.
    #[arg(long, default_value = "dpm++2m")]
    pub sampler: String,

    /// Inference steps.
    #[arg(long, default_value_t = 25)]
    pub steps: usize,

    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also write the samples as one PNG grid, one row per prompt.
    #[arg(long, value_name = "FILE.png")]
    pub grid: Option<PathBuf>,
}

/// The flags of `lmzh eval` itself.
#[derive(Debug, Clone, ClapArgs)]
pub struct MetricsArgs {
    /// The samples: a folder of image files (as `lmzh sample --out DIR`
    /// writes; grid*.png are skipped), a .safetensors file with one
    /// [N, C, H, W] tensor in [-1, 1], or a data source spec such as
    /// `fashion-mnist:test` (for real-data baselines).
    #[arg(long, value_name = "DIR|FILE|SPEC")]
    pub samples: Option<String>,

    /// The real data to compare with: a data source spec (`digits`,
    /// `fashion-mnist-test`, `fashion-mnist`, `mnist-test`, `folder:DIR`...).
    #[arg(long, value_name = "SPEC", default_value = "fashion-mnist-test")]
    pub reference: String,

    /// The feature net: `auto` (the bundled net made for the reference
    /// data), a bundled net (`fmnist`, `digits`), a .safetensors file from
    /// `lmzh eval train-features`, or a TorchScript module (.pt) such as an
    /// Inception-v3 export (see --ts-resolution).
    #[arg(long, value_name = "NAME|FILE", default_value = "auto")]
    pub feature_net: String,

    /// Use at most this many samples (the first ones).
    #[arg(long, value_name = "N")]
    pub num_samples: Option<usize>,

    /// Use at most this many reference images (the first ones; all by default).
    #[arg(long, value_name = "N")]
    pub reference_limit: Option<usize>,

    /// Degrade the samples first: `noise=STD` (Gaussian, in 0..1 pixel
    /// units) or `blur=SIGMA` (pixels). For baselines.
    #[arg(long, value_name = "noise=STD|blur=SIGMA")]
    pub degrade: Option<String>,

    /// Number of random subsets KID averages over.
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,

    /// Size of each KID subset (capped at the smaller set).
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,

    /// Seed of the KID subsets and of --degrade noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Neither read nor write the cache of reference features.
    #[arg(long)]
    pub no_cache: bool,

    /// Input side length of a TorchScript feature module.
    #[arg(long, default_value_t = 299)]
    pub ts_resolution: u32,

    /// Input channels of a TorchScript feature module.
    #[arg(long, default_value_t = 3)]
    pub ts_channels: u8,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// The flags of `lmzh eval train-features`.
#[derive(Debug, Clone, ClapArgs)]
pub struct TrainFeaturesArgs {
    /// Labelled training data: `digits`, `fashion-mnist`, `mnist`, `idx:IMAGES,LABELS`
    /// or a folder with one sub-folder per class. Held out: the `:test`
    /// split of benchmark sets, else every 10th image.
    #[arg(long, value_name = "SPEC", default_value = "digits")]
    pub data: String,

    /// Name used in metric labels (`FD-<NAME>`); by default from the data
    /// (FMNIST, DIGITS, MNIST, ...).
    #[arg(long)]
    pub name: Option<String>,

    /// Where to write the net (.safetensors).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    #[arg(long, default_value_t = 5)]
    pub epochs: usize,

    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,

    /// Initial AdamW learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,

    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Train on at most this many images.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// What `lmzh eval` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    pub feature_net: String,
    pub samples: String,
    pub num_samples: usize,
    pub reference: String,
    pub num_reference: usize,
    pub report: Report,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.label;
        let r = &self.report;
        writeln!(f, "feature net  {}", self.feature_net)?;
        writeln!(
            f,
            "samples      {} ({} images)",
            self.samples, self.num_samples
        )?;
        writeln!(
            f,
            "reference    {} ({} images)",
            self.reference, self.num_reference
        )?;
        writeln!(f, "{:<20}{:.4}", format!("FD-{l}"), r.fd)?;
        writeln!(
            f,
            "{:<20}{:.6} ± {:.6}",
            format!("KID-{l}"),
            r.kid_mean,
            r.kid_std
        )?;
        writeln!(f, "{:<20}{:.4}", format!("precision-{l}"), r.precision)?;
        writeln!(f, "{:<20}{:.4}", format!("recall-{l}"), r.recall)?;
        writeln!(f, "{:<20}{:.4}", format!("density-{l}"), r.density)?;
        write!(f, "{:<20}{:.4}", format!("coverage-{l}"), r.coverage)
    }
}

/// What `lmzh eval train-features` did.
#[derive(Debug, Clone)]
pub struct Trained {
    pub out: PathBuf,
    pub name: String,
    pub test_accuracy: f64,
    pub test_split: String,
}

impl fmt::Display for Trained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote feature net {} to {}: held-out accuracy {:.2} % on {}",
            self.name,
            self.out.display(),
            100.0 * self.test_accuracy,
            self.test_split
        )
    }
}

/// What `lmzh eval prompts` found.
#[derive(Debug, Clone)]
pub struct PromptOutcome {
    pub model: PathBuf,
    pub report: PromptReport,
}

impl fmt::Display for PromptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "model  {}", self.model.display())?;
        write!(f, "{}", self.report)
    }
}

/// Scores the prompt following of the samples `sampler` draws as `args`
/// say (the sampler is told the prompts and images per prompt; it reads
/// the model, solver, steps, guidance and seed from `args` itself); writes
/// `--json` and `--grid`. Errors name the flag at fault.
pub fn run_prompts(args: &PromptsArgs, sampler: &mut dyn PromptSampler) -> Result<PromptOutcome> {
    prompt_eval(args, sampler).map_err(as_flags)
}

fn prompt_eval(args: &PromptsArgs, sampler: &mut dyn PromptSampler) -> Result<PromptOutcome> {
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    let scorer = PairScorer::bundled(device)?;
    let (held_out, seen) = prompts::default_pairs();
    let (seen, held_out) = match args.pairs.as_str() {
        "held-out" => (Vec::new(), held_out),
        "seen" => (seen, Vec::new()),
        _ => (seen, held_out),
    };
    let options = PromptOptions {
        images_per_prompt: args.images_per_prompt,
        guidance_scale: args.guidance_scale,
        seed: args.seed,
        solver: format!("{}, {} steps", args.sampler, args.steps),
    };
    let mut grid_images = None;
    let mut keep = |p: &[String], k: usize| -> Result<tch::Tensor> {
        let images = sampler.sample(p, k)?;
        if args.grid.is_some() {
            grid_images = Some(images.shallow_clone());
        }
        Ok(images)
    };
    let report = prompts::evaluate(&mut keep, &scorer, &seen, &held_out, &options)?;
    if let (Some(path), Some(images)) = (&args.grid, &grid_images) {
        let per_row = args.images_per_prompt as i64;
        tensor::image::save_grid(path, &images.to_device(tch::Device::Cpu), per_row)?;
    }
    if let Some(path) = &args.json {
        let mut json = report.to_json();
        json["model"] = args.model.display().to_string().into();
        let text = serde_json::to_string_pretty(&json).expect("report serialises");
        tensor::fs::write_bytes_atomic(path, text.as_bytes())?;
    }
    Ok(PromptOutcome {
        model: args.model.clone(),
        report,
    })
}

/// The flag of an [`Error::Parameter`] the library names by its field.
fn flag(name: &'static str) -> &'static str {
    match name {
        "images_per_prompt" => "--images-per-prompt",
        "samples" => "--samples",
        "feature_net" => "--feature-net",
        "degrade" => "--degrade",
        "kid_subsets" => "--kid-subsets",
        "kid_subset_size" => "--kid-subset-size",
        "data" => "--data",
        "limit" => "--limit",
        "epochs/batch_size" => "--epochs/--batch-size",
        other => other,
    }
}

/// `e` with the flag in place of the field it names.
fn as_flags(e: Error) -> Error {
    match e {
        Error::Parameter {
            name,
            value,
            expected,
        } => Error::Parameter {
            name: flag(name),
            value,
            expected,
        },
        other => other,
    }
}

/// Computes the metrics `args` ask for; errors name the flag at fault.
pub fn run_metrics(args: &MetricsArgs) -> Result<Outcome> {
    metrics(args).map_err(as_flags)
}

fn metrics(args: &MetricsArgs) -> Result<Outcome> {
    let samples = args.samples.as_deref().ok_or_else(|| Error::Parameter {
        name: "samples",
        value: "(missing)".into(),
        expected: "a folder of images, a .safetensors batch or a data source spec".into(),
    })?;
    let device = args.device.parse::<DeviceSpec>()?.resolve()?;
    let spec = reference::parse_spec(&args.reference)?;
    let extractor = match args.feature_net.as_str() {
        "auto" => Extractor::for_reference(&spec, device)?,
        other => Extractor::open(
            other,
            device,
            TorchScriptInput {
                resolution: args.ts_resolution,
                channels: args.ts_channels,
            },
        )?,
    };
    let degrade = args
        .degrade
        .as_deref()
        .map(str::parse::<images::Degrade>)
        .transpose()?;
    let opts = Options {
        kid_subsets: args.kid_subsets,
        kid_subset_size: args.kid_subset_size,
        seed: args.seed,
        ..Options::default()
    };
    opts.validate()?;

    let cache = (!args.no_cache).then(reference::default_cache_dir);
    let reference =
        Reference::load_or_compute(&spec, args.reference_limit, &extractor, cache.as_deref())?;
    let (resolution, channels) = input_of(&extractor);
    let mut images = images::load_samples(samples, args.num_samples, resolution, channels)?;
    if let Some(d) = degrade {
        images = d.apply(&images, args.seed);
    }
    let report = reference.evaluate(&extractor, &images, &opts)?;
    let outcome = Outcome {
        label: extractor.label().to_string(),
        feature_net: extractor.describe(),
        samples: match degrade {
            Some(d) => format!("{samples}, {d}"),
            None => samples.to_string(),
        },
        num_samples: images.size()[0] as usize,
        reference: reference.spec.clone(),
        num_reference: reference.len(),
        report,
    };
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "feature_net": extractor.label(),
            "feature_net_description": outcome.feature_net,
            "samples": outcome.samples,
            "num_samples": outcome.num_samples,
            "reference": outcome.reference,
            "num_reference": outcome.num_reference,
            "metrics": report,
        });
        let text = serde_json::to_string_pretty(&json).expect("report serialises");
        tensor::fs::write_bytes_atomic(path, text.as_bytes())?;
    }
    Ok(outcome)
}

/// Trains a feature net as `args` ask, printing one line per epoch; errors
/// name the flag at fault.
pub fn run_train_features(args: &TrainFeaturesArgs, command: String) -> Result<Trained> {
    train_features(args, command).map_err(as_flags)
}

fn train_features(args: &TrainFeaturesArgs, command: String) -> Result<Trained> {
    let data = reference::parse_spec(&args.data)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(&data));
    let opts = TrainNetOptions {
        data,
        name: name.clone(),
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        seed: args.seed,
        limit: args.limit,
        device: args.device.parse::<DeviceSpec>()?.resolve()?,
        command,
    };
    let net = train_net::train(&opts, &mut |r| {
        eprintln!(
            "epoch {}/{}: train loss {:.4}, held-out accuracy {:.2} %",
            r.epoch,
            r.epochs,
            r.train_loss,
            100.0 * r.test_accuracy
        );
    })?;
    net.save(&args.out)?;
    let info = net.info();
    Ok(Trained {
        out: args.out.clone(),
        name,
        test_accuracy: info.test_accuracy.unwrap_or(f64::NAN),
        test_split: info.test_split.clone().unwrap_or_default(),
    })
}

fn default_name(spec: &data_pipeline::source::SourceSpec) -> String {
    use data_pipeline::source::SourceSpec as S;
    match spec {
        S::FashionMnist(_) => "FMNIST".into(),
        S::Digits => "DIGITS".into(),
        S::Mnist(_) => "MNIST".into(),
        S::Cifar10 { .. } => "CIFAR10".into(),
        _ => "CUSTOM".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(degrade: &str) -> MetricsArgs {
        MetricsArgs {
            samples: Some("digits".into()),
            reference: "digits".into(),
            feature_net: "no-such-net".into(),
            num_samples: None,
            reference_limit: None,
            degrade: Some(degrade.into()),
            kid_subsets: 100,
            kid_subset_size: 1000,
            seed: 0,
            json: None,
            no_cache: true,
            ts_resolution: 299,
            ts_channels: 3,
            device: "cpu".into(),
        }
    }

    #[test]
    fn errors_name_flags_where_the_library_names_fields() {
        let e = run_metrics(&args("noise=0.1")).unwrap_err().to_string();
        assert!(e.starts_with("--feature-net = no-such-net:"), "{e}");
        let lib = Extractor::open(
            "no-such-net",
            tch::Device::Cpu,
            TorchScriptInput {
                resolution: 299,
                channels: 3,
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(lib.starts_with("feature_net = no-such-net:"), "{lib}");
        let mut bad = args("smudge=2");
        bad.feature_net = "digits".into();
        let e = run_metrics(&bad).unwrap_err().to_string();
        assert!(e.starts_with("--degrade = smudge=2:"), "{e}");
    }

    fn prompt_args(dir: &std::path::Path) -> PromptsArgs {
        PromptsArgs {
            model: "runs/none".into(),
            guidance_scale: 1.0,
            images_per_prompt: 2,
            pairs: "held-out".into(),
            sampler: "dpm++2m".into(),
            steps: 25,
            seed: 0,
            device: "cpu".into(),
            json: Some(dir.join("prompts.json")),
            grid: Some(dir.join("grid.png")),
        }
    }

    /// The prompt mode with a stand-in sampler: the prompts reach it, the
    /// table and JSON say what it drew (blank canvases: nothing right), the
    /// grid has one row per prompt, and library errors name flags.
    #[test]
    fn prompt_mode_writes_its_table_json_and_grid() {
        let dir = tempfile::tempdir().unwrap();
        let args = prompt_args(dir.path());
        let mut seen_prompts = Vec::new();
        let mut blank = |p: &[String], k: usize| -> Result<tch::Tensor> {
            seen_prompts.extend_from_slice(p);
            Ok(tch::Tensor::full(
                [(p.len() * k) as i64, 1, 32, 32],
                -1.0,
                (tch::Kind::Float, tch::Device::Cpu),
            ))
        };
        let out = run_prompts(&args, &mut blank).unwrap();
        let mut bad = prompt_args(dir.path());
        bad.images_per_prompt = 0;
        let e = run_prompts(&bad, &mut blank).unwrap_err().to_string();
        assert!(e.starts_with("--images-per-prompt = 0"), "{e}");
        assert_eq!(seen_prompts.len(), 10);
        assert_eq!(seen_prompts[1], "a 1 to the left of a 3");
        assert_eq!(out.report.held_out.images, 20);
        assert_eq!(out.report.held_out.both, 0);
        assert_eq!(out.report.seen.images, 0);
        let table = out.to_string();
        assert!(
            table.contains("runs/none") && table.contains("0.0 %"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("prompts.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["held_out"]["images"], 20);
        assert_eq!(json["held_out"]["both_right_rate"], 0.0);
        assert!(json["seen"]["both_right_rate"].is_null());
        assert_eq!(json["options"]["guidance_scale"], 1.0);
        let grid = image::open(dir.path().join("grid.png")).unwrap();
        assert_eq!(
            (grid.width(), grid.height()),
            (2 * 32 + 3 * 2, 10 * 32 + 11 * 2)
        );
    }
}
