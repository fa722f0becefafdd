//! `cargo xtask bench [speed]` and `cargo xtask bench scaling`: training and
//! sampling speed of `lmzh bench` against diffusers (`scripts/bench_peer.py`)
//! on the same libtorch, in one run.
//!
//! Every configuration runs in its own process, once per round, the rounds
//! alternating ours and the peer so that a slow spell of a shared machine
//! hits both; the table shows the median of the rounds. Ratios are against
//! the peer's fp32 eager row of the same layout and mode. GFLOP/s are read
//! against the GEMM rate of `lmzh bench matmul` measured in the same run.
//! 16-bit rows run only where the hardware computes in 16 bits (a GPU, or a
//! CPU whose bf16 matmul beats its f32 one); elsewhere one short run (batch
//! 8, one step) shows what emulation costs, marked as such.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::flags::{Flags, Parsed};

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub layouts: Vec<String>,
    pub rounds: usize,
    pub device: String,
    pub scaling: bool,
    /// Run diffusers' rows too (they need Python and the reference oracle).
    pub peer: bool,
    /// A prebuilt `lmzh` to time; `None`: build it (release).
    pub lmzh: Option<PathBuf>,
}

pub const USAGE: &str = "\
usage: cargo xtask bench [speed|scaling] [--layouts grey32,ddpm-cifar10] [--rounds N]
                         [--device cpu|cuda] [--no-peer]

  --layouts L,...  U-Net layouts to time (default grey32,ddpm-cifar10)
  --rounds N       rounds per configuration, median shown (default 3)
  --device D       cpu (default), cuda or cuda:N
  --no-peer        ours only: skip diffusers' rows (no Python needed)

speed: train and sample, ours and diffusers, fp32 and bf16; scaling: ours at
32/64/128 px and batch 16/64/256. JSON in target/bench/.
";

pub fn parse(args: &[String], scaling: bool) -> Result<Parsed<Options>> {
    let name = if scaling {
        "bench scaling"
    } else {
        "bench speed"
    };
    let mut f = Flags::new(name, USAGE, args);
    if f.wants_help() {
        return Ok(f.help());
    }
    let mut o = Options {
        layouts: vec!["grey32".into(), "ddpm-cifar10".into()],
        rounds: 3,
        device: "cpu".into(),
        scaling,
        peer: true,
        lmzh: None,
    };
    while let Some(flag) = f.next() {
        match flag {
            "--layouts" => {
                o.layouts = f
                    .value(flag)?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--rounds" => o.rounds = f.parse(flag)?,
            "--device" => o.device = f.value(flag)?.to_string(),
            "--no-peer" => o.peer = false,
            other => return Err(f.unknown(other)),
        }
    }
    if o.rounds == 0 || o.layouts.is_empty() {
        return Err(f.error("--rounds must be at least 1 and --layouts name a layout"));
    }
    Ok(Parsed::Run(o))
}

/// One configuration of the table.
#[derive(Clone)]
struct Config {
    who: &'static str,
    mode: &'static str,
    layout: String,
    precision: &'static str,
    extra: Vec<String>,
    batch: usize,
    steps: usize,
    size: Option<usize>,
    /// Emulated 16-bit: one short run instead of the rounds.
    short: bool,
}

impl Config {
    fn label(&self) -> String {
        let mut s = format!("{} {}", self.who, self.precision);
        for e in &self.extra {
            s.push(' ');
            s.push_str(e.trim_start_matches("--"));
        }
        if self.short {
            s.push_str(" (emulated)");
        }
        s
    }

    fn args(&self, device: &str) -> Vec<String> {
        let mut a = vec![
            self.mode.to_string(),
            "--layout".into(),
            self.layout.clone(),
            "--batch".into(),
            self.batch.to_string(),
            "--steps".into(),
            self.steps.to_string(),
            "--precision".into(),
            self.precision.into(),
            "--device".into(),
            device.into(),
        ];
        if let Some(s) = self.size {
            a.extend(["--size".into(), s.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

pub fn run(o: &Options) -> Result<()> {
    let root = crate::workspace_root();
    let ours = match &o.lmzh {
        Some(path) => path.clone(),
        None => build(&root)?,
    };
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let gpu = o.device.starts_with("cuda");

    let peak = |precision: &str| -> Result<f64> {
        let args = ["matmul", "--precision", precision, "--device", &o.device].map(String::from);
        num(&run_ours(&ours, &args)?, "gflop_per_s")
    };
    let fp32_peak = peak("fp32")?;
    let bf16_peak = peak("bf16")?;
    let native_bf16 = gpu || bf16_peak > fp32_peak;
    println!(
        "matmul on {}: fp32 {fp32_peak:.0} GFLOP/s, bf16 {bf16_peak:.0} GFLOP/s ({})",
        o.device,
        if native_bf16 {
            "native"
        } else {
            "emulated: no AVX512-BF16/AMX"
        }
    );

    let configs = if o.scaling {
        scaling_configs()
    } else {
        speed_configs(o, gpu, native_bf16)
    };
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); configs.len()];
    for round in 0..o.rounds {
        for (i, c) in configs.iter().enumerate() {
            if c.short && round > 0 {
                continue;
            }
            let args = c.args(&o.device);
            let v = if c.who == "ours" {
                run_ours(&ours, &args)?
            } else {
                run_peer(&args)?
            };
            println!(
                "round {}: {} {} {:<28} {:>8.2} img/s",
                round + 1,
                c.layout,
                c.mode,
                c.label(),
                num(&v, "img_per_s")?
            );
            results[i].push(v);
        }
    }

    let mut rows = Vec::new();
    for (c, runs) in configs.iter().zip(&results) {
        let median_of = |key: &str| -> Result<f64> {
            let mut v: Vec<f64> = runs.iter().map(|r| num(r, key)).collect::<Result<_>>()?;
            v.sort_by(f64::total_cmp);
            Ok(v[v.len() / 2])
        };
        let ips = median_of("img_per_s")?;
        let gflops = median_of("gflop_per_s")?;
        let rss = runs
            .iter()
            .map(|r| num(r, "peak_rss_mb"))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .fold(0.0, f64::max);
        let peak = if c.precision == "fp32" {
            fp32_peak
        } else {
            bf16_peak
        };
        rows.push(json!({
            "layout": c.layout, "mode": c.mode, "who": c.who, "label": c.label(),
            "precision": c.precision, "batch": c.batch,
            "size": runs[0]["size"], "img_per_s": ips, "gflop_per_s": gflops,
            // Emulated 16-bit has no meaningful GEMM peak to read against.
            "percent_of_matmul_peak": (!c.short).then(|| 100.0 * gflops / peak),
            "peak_rss_mb": rss,
            "rounds": runs.len(), "runs": runs,
        }));
    }
    // Ratios against the peer's fp32 eager row of the same layout and mode.
    for i in 0..rows.len() {
        let base = rows.iter().find(|r| {
            r["label"] == "diffusers fp32"
                && r["layout"] == rows[i]["layout"]
                && r["mode"] == rows[i]["mode"]
        });
        let ratio =
            base.map(|b| num(&rows[i], "img_per_s").unwrap() / num(b, "img_per_s").unwrap());
        rows[i]["ratio_vs_peer_fp32"] = json!(ratio);
    }

    println!();
    if o.scaling {
        print_scaling(&rows)?;
    } else {
        print_speed(&rows, o, fp32_peak, bf16_peak)?;
    }
    let name = if o.scaling {
        "scaling.json"
    } else {
        "speed.json"
    };
    let path = out_dir.join(name);
    let doc = json!({
        "device": o.device, "rounds": o.rounds, "threads": threads(),
        "matmul_gflop_per_s": {"fp32": fp32_peak, "bf16": bf16_peak},
        "bf16_native": native_bf16, "rows": rows,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

fn speed_configs(o: &Options, gpu: bool, native_bf16: bool) -> Vec<Config> {
    let mut out = Vec::new();
    for layout in &o.layouts {
        let small = layout == "grey32";
        for mode in ["train", "sample"] {
            let (batch, steps) = match (small, mode) {
                (true, "train") => (64, 3),
                (true, _) => (64, 10),
                (false, "train") => (32, 2),
                (false, _) => (32, 5),
            };
            let c = |who, precision, extra: &[&str]| Config {
                who,
                mode,
                layout: layout.clone(),
                precision,
                extra: extra.iter().map(|s| s.to_string()).collect(),
                batch,
                steps,
                size: None,
                short: false,
            };
            if o.peer {
                out.push(c("diffusers", "fp32", &[]));
            }
            if gpu && o.peer {
                out.push(c("diffusers", "fp32", &["--compile"]));
            }
            out.push(c("ours", "fp32", &[]));
            out.push(c("ours", "fp32", &["--channels-last"]));
            let mut bf16 = c("ours", "bf16", &["--channels-last"]);
            if !native_bf16 {
                bf16.short = true;
                bf16.batch = 8;
                bf16.steps = 1;
            }
            out.push(bf16);
            if gpu && o.peer {
                out.push(c("diffusers", "bf16", &["--channels-last"]));
            }
        }
    }
    out
}

fn scaling_configs() -> Vec<Config> {
    let mut out = Vec::new();
    for mode in ["train", "sample"] {
        let steps = if mode == "train" { 2 } else { 5 };
        let cells: [(usize, usize); 5] = [(32, 16), (64, 16), (128, 16), (32, 64), (32, 256)];
        for (size, batch) in cells {
            out.push(Config {
                who: "ours",
                mode,
                layout: "grey32".into(),
                precision: "fp32",
                extra: Vec::new(),
                batch,
                steps,
                size: Some(size),
                short: false,
            });
        }
    }
    out
}

fn print_speed(rows: &[Value], o: &Options, fp32: f64, bf16: f64) -> Result<()> {
    println!(
        "| layout | mode | run | img/s | vs diffusers fp32 | GFLOP/s | % of matmul peak | peak RSS MiB |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} (batch {}) | {} | {:.2} | {} | {:.0} | {} | {:.0} |",
            r["layout"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["batch"],
            r["label"].as_str().unwrap_or(""),
            num(r, "img_per_s")?,
            r["ratio_vs_peer_fp32"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.2}x")),
            num(r, "gflop_per_s")?,
            r["percent_of_matmul_peak"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.0}%")),
            num(r, "peak_rss_mb")?,
        );
    }
    println!(
        "\ncargo xtask bench on {}, {} threads, median of {} rounds; matmul peak fp32 {fp32:.0}, bf16 {bf16:.0} \
         GFLOP/s; sampling img/s counts model evaluations (images x steps)",
        o.device,
        threads(),
        o.rounds
    );
    Ok(())
}

fn print_scaling(rows: &[Value]) -> Result<()> {
    println!("| mode | size | batch | img/s | GFLOP/image | GFLOP/s | peak RSS MiB |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        let runs = r["runs"].as_array().context("runs")?;
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} |",
            r["mode"].as_str().unwrap_or(""),
            r["size"],
            r["batch"],
            num(r, "img_per_s")?,
            num(&runs[0], "gflop_per_image")?,
            num(r, "gflop_per_s")?,
            num(r, "peak_rss_mb")?,
        );
    }
    Ok(())
}

pub(crate) fn build(root: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "cli",
            "--bin",
            "lmzh",
        ])
        .status()?;
    if !status.success() {
        bail!("building lmzh failed");
    }
    Ok(root.join("target/release/lmzh"))
}

pub(crate) fn run_ours(bin: &Path, args: &[String]) -> Result<Value> {
    let out = Command::new(bin)
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .context("running lmzh bench")?;
    if !out.status.success() {
        bail!(
            "lmzh bench {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    last_json(&String::from_utf8_lossy(&out.stdout))
}

fn run_peer(args: &[String]) -> Result<Value> {
    run_script("scripts/bench_peer.py", args)
}

/// Runs a peer script through the oracle's Python and reads its JSON line.
pub(crate) fn run_script(script: &str, args: &[String]) -> Result<Value> {
    let mut full = vec![script.to_string()];
    full.extend(args.iter().cloned());
    let out = crate::py::command(&full)?
        .output()
        .context("running python")?;
    if !out.status.success() {
        bail!(
            "{script} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    last_json(&String::from_utf8_lossy(&out.stdout))
}

fn last_json(stdout: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line in the output")?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

pub(crate) fn num(v: &Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {v}"))
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
