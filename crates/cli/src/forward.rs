//! `lmzh forward`: the forward process made visible, one column per
//! timestep (see [`schedule::strip`]).
//!
//! ```text
//! lmzh forward --image in.png [--steps 0,100,250,500,750,999] [--out forward.png]
//!              [--model DIR | --config scheduler_config.json |
//!               --beta-schedule cosine --num-train-timesteps 1000 ...] [--seed 0]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use sampler::cli::model::write_rows;
use sampler::pipeline::Pipeline;
use schedule::{BetaSchedule, Schedule, SchedulerConfig};
use tensor::tch::{self, Device, Kind};

/// Flags of `lmzh forward`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    lmzh forward --image digit.png --beta-schedule cosine --out forward.png\n  \
    lmzh forward --image digit.png --model assets/models/digits --steps 0,50,100,200,400,999\n\n\
    Every column uses the same noise, so the image fades into one noise image at the pace of the schedule.")]
pub struct Args {
    /// The image (kept at its size and channels, unless --model is given:
    /// then preprocessed as that model's inputs).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,

    /// Timesteps to show, comma-separated, each below the schedule's
    /// num_train_timesteps.
    #[arg(
        long,
        value_name = "T[,T...]",
        value_delimiter = ',',
        default_value = "0,100,250,500,750,999"
    )]
    pub steps: Vec<usize>,

    /// The output strip.
    #[arg(long, value_name = "FILE.png", default_value = "forward.png")]
    pub out: PathBuf,

    /// Seed of the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Take the schedule (and the input preprocessing) from a model folder.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "rescale_betas_zero_snr"])]
    pub model: Option<PathBuf>,

    /// Take the schedule from a diffusers scheduler_config.json.
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "rescale_betas_zero_snr"])]
    pub config: Option<PathBuf>,

    /// The schedule, when neither --model nor --config gives it; several
    /// beta schedules give one row each.
    #[command(flatten)]
    pub schedule: ScheduleFlags,
}

/// The flags that describe a noise schedule, shared by `lmzh forward` and
/// `lmzh schedule`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleFlags {
    /// Beta schedule, or a comma-separated list to compare: linear,
    /// scaled_linear, squaredcos_cap_v2 (alias cosine), sigmoid.
    #[arg(
        long,
        default_value = "linear",
        value_parser = parse_beta_schedule,
        value_delimiter = ',',
        value_name = "NAME[,NAME...]"
    )]
    pub beta_schedule: Vec<BetaSchedule>,

    /// Number of training timesteps T (at least 2).
    #[arg(long, default_value_t = 1000, value_name = "T")]
    pub num_train_timesteps: usize,

    /// First beta of linear, scaled_linear and sigmoid (cosine ignores it).
    #[arg(long, default_value_t = 0.0001)]
    pub beta_start: f64,

    /// Last beta of linear, scaled_linear and sigmoid (cosine ignores it).
    #[arg(long, default_value_t = 0.02)]
    pub beta_end: f64,

    /// Rescale to zero terminal SNR (Lin et al. 2023): the last step becomes
    /// pure noise (alpha_bar = 0, log-SNR = -inf).
    #[arg(long)]
    pub rescale_betas_zero_snr: bool,
}

impl ScheduleFlags {
    /// The scheduler config of one of the named beta schedules, with the
    /// other flags.
    pub fn config(&self, beta_schedule: BetaSchedule) -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: Some(beta_schedule),
            num_train_timesteps: Some(self.num_train_timesteps),
            beta_start: Some(self.beta_start),
            beta_end: Some(self.beta_end),
            rescale_betas_zero_snr: Some(self.rescale_betas_zero_snr),
            ..SchedulerConfig::ddpm()
        }
    }
}

fn parse_beta_schedule(s: &str) -> std::result::Result<BetaSchedule, String> {
    s.parse().map_err(|e: schedule::Error| e.to_string())
}

/// What `lmzh forward` did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per row: the schedule's name and (t, alpha_bar_t) of every column.
    pub rows: Vec<(String, Vec<(usize, f64)>)>,
    pub out: PathBuf,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, columns) in &self.rows {
            writeln!(f, "{name}:")?;
            for (t, ab) in columns {
                writeln!(
                    f,
                    "  t = {t:4}: signal sqrt(alpha_bar) = {:.4}, noise sqrt(1 - alpha_bar) = {:.4}",
                    ab.sqrt(),
                    (1.0 - ab).sqrt()
                )?;
            }
        }
        write!(
            f,
            "wrote {} ({} row(s) of {} columns)",
            self.out.display(),
            self.rows.len(),
            self.rows.first().map_or(0, |r| r.1.len())
        )
    }
}

/// The schedules the flags describe, with their names.
fn schedules_of(args: &Args) -> Result<Vec<(String, Schedule)>> {
    let configs = match (&args.model, &args.config) {
        (Some(dir), _) => vec![(dir.display().to_string(), Pipeline::open(dir)?.scheduler)],
        (None, Some(path)) => vec![(path.display().to_string(), SchedulerConfig::load(path)?)],
        (None, None) => args
            .schedule
            .beta_schedule
            .iter()
            .map(|&b| (b.to_string(), args.schedule.config(b)))
            .collect(),
    };
    configs
        .into_iter()
        .map(|(name, config)| Ok((name, Schedule::from_config(&config)?)))
        .collect()
}

/// `lmzh forward`: draws the strip as the flags say, writes it and prints
/// what each column keeps of the image.
pub fn run(args: &Args) -> Result<ExitCode> {
    println!("{}", strip(args)?);
    Ok(ExitCode::SUCCESS)
}

/// Draws the strip as the flags say and writes it.
pub fn strip(args: &Args) -> Result<Summary> {
    let schedules = schedules_of(args)?;
    if args.steps.is_empty() {
        bail!("--steps: no timestep given");
    }
    for (name, schedule) in &schedules {
        let train = schedule.num_train_timesteps();
        if let Some(bad) = args.steps.iter().find(|&&t| t >= train) {
            bail!(
                "--steps: timestep {bad} is outside the {train} timesteps of {name} (0..={})",
                train - 1
            );
        }
    }
    let x0 = match &args.model {
        Some(dir) => {
            let pipe = Pipeline::open(dir)?;
            let cfg = unet::UNetConfig::from_file(pipe.unet_dir().join("config.json"))?;
            let (h, w) = cfg
                .sample_hw()
                .with_context(|| format!("{}: config.json has no sample_size", dir.display()))?;
            pipe.input_spec([cfg.in_channels, h, w])?
                .load(&args.image)?
        }
        None => tensor::image::load_image(&args.image)?,
    };
    tensor::seed::seed_everything(args.seed);
    let noise = tch::Tensor::randn(x0.size(), (Kind::Float, Device::Cpu));
    // One row per schedule, laid out as schedule::forward_strip lays out one.
    let rows: Vec<tch::Tensor> = schedules
        .iter()
        .map(|(_, s)| schedule::forward_samples(&x0, s, &args.steps, &noise))
        .collect::<std::result::Result<_, _>>()?;
    write_rows(&args.out, &rows)?;
    Ok(Summary {
        rows: schedules
            .iter()
            .map(|(name, s)| {
                let columns = args.steps.iter().map(|&t| (t, s.alpha_bar(t))).collect();
                (name.clone(), columns)
            })
            .collect(),
        out: args.out.clone(),
    })
}
