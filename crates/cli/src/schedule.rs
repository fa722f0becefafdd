//! `lmzh schedule`: look at a noise schedule, as a table of (t, beta,
//! alpha_bar, SNR, log-SNR) or as a plot of alpha_bar and log-SNR against t
//! for one or several schedules side by side.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use crate::forward::ScheduleFlags;
use anyhow::{bail, Context};
use schedule::plot::{self, PlotOptions};
use schedule::{BetaSchedule, Schedule, SchedulerConfig};

/// Flags of `lmzh schedule`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub schedule: ScheduleFlags,

    /// Take the schedule from a diffusers scheduler_config.json instead.
    #[arg(
        long,
        value_name = "FILE.json",
        conflicts_with_all = ["beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "rescale_betas_zero_snr"]
    )]
    pub config: Option<PathBuf>,

    /// Print every K-th timestep (default: about 20 rows of the table, every
    /// row with --json); the last timestep is always printed.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub every: Option<u64>,

    /// Print the table as JSON: a list with one object per schedule
    /// (infinite log-SNR values are written as null).
    #[arg(long)]
    pub json: bool,

    /// Also draw alpha_bar and log-SNR against t into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

/// One schedule to show, with the config it came from.
struct Shown {
    label: String,
    config: SchedulerConfig,
    schedule: Schedule,
}

pub fn run(args: &Args) -> anyhow::Result<std::process::ExitCode> {
    let shown = schedules(args)?;
    if let Some(path) = &args.plot {
        let series: Vec<(String, Schedule)> = shown
            .iter()
            .map(|s| (s.label.clone(), s.schedule.clone()))
            .collect();
        plot::save_png(path, &series, &PlotOptions::default())
            .with_context(|| format!("--plot {}", path.display()))?;
        // On stderr: stdout holds the table, which may be piped on.
        eprintln!("wrote {}", path.display());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    let printed = if args.json {
        print_json(&mut out, &shown, args.every)
    } else {
        print_tables(&mut out, &shown, args.every)
    };
    match printed.and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing to stdout")?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn schedules(args: &Args) -> anyhow::Result<Vec<Shown>> {
    if let Some(path) = &args.config {
        let config = SchedulerConfig::load(path)?;
        let schedule = Schedule::from_config(&config)
            .with_context(|| format!("--config {}", path.display()))?;
        let label = label(&config);
        return Ok(vec![Shown {
            label,
            config,
            schedule,
        }]);
    }
    if args.schedule.beta_schedule.is_empty() {
        bail!("--beta-schedule: name at least one schedule");
    }
    let mut shown: Vec<Shown> = Vec::new();
    for &beta_schedule in &args.schedule.beta_schedule {
        if shown
            .iter()
            .any(|s| s.config.beta_schedule == Some(beta_schedule))
        {
            continue;
        }
        let config = args.schedule.config(beta_schedule);
        let schedule = Schedule::from_config(&config)
            .with_context(|| format!("--beta-schedule {beta_schedule}"))?;
        shown.push(Shown {
            label: label(&config),
            config,
            schedule,
        });
    }
    Ok(shown)
}

/// A name a reader recognises: the cosine schedule is called so.
fn label(config: &SchedulerConfig) -> String {
    let name = if config.given_betas().is_some() {
        "trained betas".to_string()
    } else {
        match config.beta_schedule.unwrap_or(BetaSchedule::Linear) {
            BetaSchedule::SquaredcosCapV2 => "cosine (squaredcos_cap_v2)".to_string(),
            other => other.to_string(),
        }
    };
    if config.rescale_betas_zero_snr.unwrap_or(false) {
        format!("{name}, zero terminal SNR")
    } else {
        name
    }
}

/// The timesteps to print: every K-th, and always the last.
fn rows(n: usize, every: Option<u64>, default_every: usize) -> Vec<usize> {
    let step = every.map_or(default_every, |k| k as usize).max(1);
    let mut ts: Vec<usize> = (0..n).step_by(step).collect();
    if ts.last() != Some(&(n - 1)) {
        ts.push(n - 1);
    }
    ts
}

fn describe(s: &Shown) -> String {
    let c = &s.config;
    let schedule = c.beta_schedule.unwrap_or(BetaSchedule::Linear);
    let range = if c.given_betas().is_none() && schedule.uses_beta_range() {
        format!(
            ", beta {} -> {}",
            c.beta_start.unwrap_or(0.0001),
            c.beta_end.unwrap_or(0.02)
        )
    } else {
        String::new()
    };
    format!(
        "{}: T = {}{range}",
        s.label,
        s.schedule.num_train_timesteps()
    )
}

fn print_tables(out: &mut impl Write, shown: &[Shown], every: Option<u64>) -> io::Result<()> {
    for (i, s) in shown.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let n = s.schedule.num_train_timesteps();
        writeln!(out, "{}", describe(s))?;
        writeln!(
            out,
            "{:>6}  {:>12}  {:>12}  {:>12}  {:>9}",
            "t", "beta", "alpha_bar", "SNR", "log-SNR"
        )?;
        for t in rows(n, every, n.div_ceil(20)) {
            let r = s.schedule.row(t);
            writeln!(
                out,
                "{:>6}  {:>12}  {:>12}  {:>12}  {:>9.3}",
                r.t,
                sci(r.beta),
                sci(r.alpha_bar),
                sci(r.snr),
                r.log_snr
            )?;
        }
    }
    Ok(())
}

/// Scientific notation with a signed two-digit exponent (`4.03583e-05`), as
/// numpy prints it.
fn sci(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let s = format!("{x:.5e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let exp: i32 = exp.parse().unwrap_or(0);
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exp.abs())
        }
        None => s,
    }
}

fn print_json(out: &mut impl Write, shown: &[Shown], every: Option<u64>) -> io::Result<()> {
    let doc: Vec<serde_json::Value> = shown
        .iter()
        .map(|s| {
            let n = s.schedule.num_train_timesteps();
            let table: Vec<_> = rows(n, every, 1)
                .into_iter()
                .map(|t| s.schedule.row(t))
                .collect();
            serde_json::json!({
                "label": s.label,
                // The values the schedule was built with (absent keys take
                // DDPMScheduler's defaults, as Schedule::from_config does).
                "beta_schedule": s.config.beta_schedule.unwrap_or(BetaSchedule::Linear),
                "num_train_timesteps": n,
                "beta_start": s.config.beta_start.unwrap_or(0.0001),
                "beta_end": s.config.beta_end.unwrap_or(0.02),
                "rescale_betas_zero_snr": s.config.rescale_betas_zero_snr.unwrap_or(false),
                "rows": table,
            })
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("schedule").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn lists_aliases_and_errors() {
        let a = parse(&[
            "--beta-schedule",
            "linear,cosine",
            "--num-train-timesteps",
            "50",
        ])
        .unwrap();
        assert_eq!(
            a.schedule.beta_schedule,
            [BetaSchedule::Linear, BetaSchedule::SquaredcosCapV2]
        );
        let shown = schedules(&a).unwrap();
        assert_eq!(shown[1].label, "cosine (squaredcos_cap_v2)");
        assert_eq!(shown[1].schedule.num_train_timesteps(), 50);

        let e = parse(&["--beta-schedule", "cosin"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown beta_schedule \"cosin\"") && e.contains("sigmoid"),
            "{e}"
        );
        assert!(parse(&["--every", "0"]).is_err());
        assert!(parse(&["--config", "x.json", "--beta-schedule", "linear"]).is_err());
        let e = schedules(&parse(&["--num-train-timesteps", "1"]).unwrap())
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("at least 2"), "{e:#}");
    }

    #[test]
    fn table_rows_end_at_the_last_step() {
        assert_eq!(rows(10, Some(4), 1), [0, 4, 8, 9]);
        assert_eq!(rows(1000, None, 50).len(), 21);
        assert_eq!(rows(3, None, 1), [0, 1, 2]);
        assert_eq!(sci(4.035834e-5), "4.03583e-05");
        assert_eq!(sci(24221.3), "2.42213e+04");
        assert_eq!(sci(0.0), "0.00000e+00");
        assert_eq!(sci(f64::INFINITY), "inf");
    }

    #[test]
    fn json_has_every_row_and_null_for_minus_infinity() {
        let a = parse(&[
            "--beta-schedule",
            "linear",
            "--num-train-timesteps",
            "20",
            "--rescale-betas-zero-snr",
        ])
        .unwrap();
        let shown = schedules(&a).unwrap();
        let mut buf = Vec::new();
        print_json(&mut buf, &shown, None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let rows = v[0]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 20);
        assert_eq!(rows[19]["alpha_bar"], 0.0);
        assert!(rows[19]["log_snr"].is_null());
        assert_eq!(v[0]["beta_schedule"], "linear");

        let mut text = Vec::new();
        print_tables(&mut text, &shown, Some(5)).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.starts_with("linear, zero terminal SNR: T = 20, beta 0.0001 -> 0.02\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2 + 5);
        assert!(text.trim_end().ends_with("-inf"), "{text}");
    }
}
