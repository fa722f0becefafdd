//! `lmzh bench`: how fast this machine trains and samples, with the
//! product's own code paths on a random-weight model.
//!
//! - `lmzh bench train`: optimiser steps of the trainer (the objective of
//!   `trainer::train::objective`, backward, gradient norm and clipping,
//!   AdamW, EMA, and the step's one host read of loss and norm) on random
//!   images of the layout's shape.
//! - `lmzh bench sample`: one DPM-Solver++(2M) sampling run of `--steps`
//!   model evaluations (`sampler::sample`), with the sampler's forward.
//! - `lmzh bench matmul`: the GEMM rate of libtorch on this device, the
//!   ceiling the others are read against.
//!
//! Each prints one JSON line: images per second (for sampling: images times
//! model evaluations per second, so train and sample compare with the
//! forward pass), achieved GFLOP/s from the model's FLOP count (a training
//! image costs three forward passes), and the process's peak RSS.
//! `cargo xtask bench` runs these beside diffusers on the same libtorch.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use schedule::{Schedule, SchedulerConfig};
use tensor::tch::{self, Device, Kind, Tensor};
use tensor::Precision;
use unet::{UNet, UNetConfig};

/// Flags of `lmzh bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// train, sample or matmul.
    #[arg(value_parser = ["train", "sample", "matmul"])]
    pub mode: String,

    /// The model: a U-Net preset (`lmzh unet info --preset`), or `grey32`:
    /// 32x32 grey, channels (64, 128, 128), two ResNets per level, attention
    /// at 16x16 and 8x8 with 8-channel heads, 32 groups (6.8 M parameters).
    #[arg(long, default_value = "grey32")]
    pub layout: String,

    /// Image side in pixels [default: the layout's].
    #[arg(long)]
    pub size: Option<i64>,

    #[arg(long, default_value_t = 64)]
    pub batch: i64,

    /// Timed optimiser steps (train) or model evaluations (sample).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,

    /// Untimed steps first (train), or an untimed 2-step run (sample).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,

    /// fp32, bf16 or fp16 (autocast; training takes fp32 or bf16).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,

    /// Channels-last memory format.
    #[arg(long)]
    pub channels_last: bool,

    /// auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// Intra-op threads [default: libtorch's, one per core].
    #[arg(long)]
    pub threads: Option<i32>,
}

/// The U-Net of `name`: a preset or `grey32`, at `size` if given.
pub fn layout(name: &str, size: Option<i64>) -> Result<UNetConfig> {
    let mut cfg = match name {
        "grey32" => UNetConfig {
            down_block_types: ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
                .map(String::from)
                .to_vec(),
            up_block_types: ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
                .map(String::from)
                .to_vec(),
            attention_head_dim: Some(8),
            ..UNetConfig::small_grey(32)
        },
        other => UNetConfig::preset(other)
            .with_context(|| format!("--layout {other:?}: expected grey32 or a preset"))?,
    };
    if let Some(s) = size {
        cfg.sample_size = Some(unet::config::SampleSize::Square(s));
    }
    Ok(cfg)
}

pub fn run(args: &Args) -> Result<ExitCode> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let device = args.device.parse::<tensor::DeviceSpec>()?.resolve()?;
    tensor::amp::check(args.precision, device)?;
    if args.batch < 1 || args.steps < 1 {
        bail!("--batch and --steps must be at least 1");
    }
    let report = match args.mode.as_str() {
        "matmul" => matmul(device, args.precision)?,
        mode => model_bench(args, mode, device)?,
    };
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn model_bench(args: &Args, mode: &str, device: Device) -> Result<serde_json::Value> {
    let cfg = layout(&args.layout, args.size)?;
    let (h, w) = cfg.sample_hw().context("the layout has no sample size")?;
    if let Err(e) = cfg.check_sample_hw(h, w) {
        bail!("--size {h}: {e}");
    }
    tensor::seed::seed_everything(0);
    let mut unet = UNet::new(&cfg, device)?;
    if args.channels_last {
        unet.to_channels_last();
    }
    let forward_flops: u64 = unet.model.flops(h, w)?.iter().map(|(_, f)| f).sum();
    let shape = [args.batch, cfg.in_channels, h, w];
    let (seconds, images, flops_per_image) = match mode {
        "train" => (
            train(&unet, args, shape, device)?,
            args.batch as usize * args.steps,
            3 * forward_flops,
        ),
        _ => (
            sample(&unet, args, shape, device)?,
            args.batch as usize * args.steps,
            forward_flops,
        ),
    };
    let img_per_s = images as f64 / seconds;
    Ok(serde_json::json!({
        "mode": mode,
        "layout": args.layout,
        "size": h,
        "batch": args.batch,
        "precision": args.precision.to_string(),
        "channels_last": args.channels_last,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "parameters": unet.num_parameters(),
        "steps": args.steps,
        "seconds": seconds,
        "img_per_s": img_per_s,
        "gflop_per_image": flops_per_image as f64 / 1e9,
        "gflop_per_s": img_per_s * flops_per_image as f64 / 1e9,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Seconds for `args.steps` optimiser steps, after the warm-up.
fn train(unet: &UNet, args: &Args, shape: [i64; 4], device: Device) -> Result<f64> {
    let params = trainer::train::trainable_params(unet);
    let mut opt = trainer::optim::AdamW::new(
        params
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect(),
        trainer::optim::OptimConfig::default(),
    )?;
    let mut ema = trainer::ema::Ema::new(&params, trainer::ema::EmaConfig::default())?;
    let noise_config = trainer::config::NoiseConfig::default();
    let schedule = Schedule::from_config(&noise_config.scheduler_config())?;
    let x0 = Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0;
    let mut step = |k: usize| -> Result<()> {
        let t = Tensor::randint(1000, [shape[0]], (Kind::Int64, device));
        let noise = x0.randn_like();
        let batch = trainer::train::Batch {
            x0: &x0,
            noise: &noise,
            t: &t,
            labels: None,
        };
        let loss =
            trainer::train::objective(unet, &schedule, &noise_config, args.precision, &batch)?;
        loss.backward();
        let norm = opt.grad_norm();
        // The trainer's one host read per step (its divergence guard).
        let read = Tensor::stack(&[loss.detach(), norm.shallow_clone()], 0)
            .to_kind(Kind::Double)
            .to_device(Device::Cpu);
        if !read.double_value(&[0]).is_finite() {
            bail!("the loss went non-finite at step {k}");
        }
        opt.clip_grad_norm(&norm);
        opt.step(1e-4);
        ema.update(&params, opt.step);
        opt.zero_grad();
        Ok(())
    };
    for k in 0..args.warmup {
        step(k)?;
    }
    let start = Instant::now();
    for k in 0..args.steps {
        step(k)?;
    }
    sync(device);
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds for one sampling run of `args.steps` model evaluations.
fn sample(unet: &UNet, args: &Args, shape: [i64; 4], device: Device) -> Result<f64> {
    let config = SchedulerConfig::ddpm();
    let model = |x: &Tensor, t: &Tensor, c: Option<&Tensor>| {
        sampler::cli::forward_in(unet, args.precision, x, t, c)
    };
    let x_t = Tensor::randn(shape, (Kind::Float, device));
    let run = |steps: usize| -> Result<()> {
        let mut solver = sampler::by_name(
            "dpm++2m",
            &config,
            steps,
            &sampler::SolverOptions::default(),
        )?;
        let out = sampler::sample::sample(
            &model,
            solver.as_mut(),
            &x_t,
            &sampler::sample::Conditioning::default(),
            &mut sampler::noise::TorchRng,
            &mut |_| {},
        )?;
        // One read of the result, as the sampler does when it writes images.
        let _ = out.to_device(Device::Cpu);
        Ok(())
    };
    if args.warmup > 0 {
        run(2)?;
    }
    let start = Instant::now();
    run(args.steps)?;
    sync(device);
    Ok(start.elapsed().as_secs_f64())
}

/// GEMM rate of square `n x n` products in `precision`'s compute type.
fn matmul(device: Device, precision: Precision) -> Result<serde_json::Value> {
    let kind = precision.autocast_kind().unwrap_or(Kind::Float);
    let n: i64 = if device == Device::Cpu { 1024 } else { 8192 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.mm(&b);
    sync(device);
    // About a second of work at the expected rate, at least 2 products.
    let probe = Instant::now();
    let _ = a.mm(&b);
    sync(device);
    let once = probe.elapsed().as_secs_f64().max(1e-6);
    let reps = ((1.0 / once) as usize).clamp(2, 200);
    let start = Instant::now();
    for _ in 0..reps {
        let _ = a.mm(&b);
    }
    sync(device);
    let seconds = start.elapsed().as_secs_f64();
    let gflop_per_s = 2.0 * (n as f64).powi(3) * reps as f64 / seconds / 1e9;
    Ok(serde_json::json!({
        "mode": "matmul",
        "precision": precision.to_string(),
        "n": n,
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "gflop_per_s": gflop_per_s,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The process's peak resident set (VmHWM), in MiB; 0 where unknown.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey32_is_the_documented_model() {
        let cfg = layout("grey32", None).unwrap();
        let unet = UNet::new(&cfg, Device::Cpu).unwrap();
        assert_eq!(unet.num_parameters(), 6_801_409);
        let err = layout("nope", None).unwrap_err().to_string();
        assert!(err.contains("--layout") && err.contains("grey32"), "{err}");
        let big = layout("grey32", Some(64)).unwrap();
        assert_eq!(big.sample_hw(), Some((64, 64)));
    }

    #[test]
    fn a_tiny_train_and_sample_bench_report_throughput() {
        for mode in ["train", "sample"] {
            let args = Args {
                mode: mode.into(),
                layout: "tiny".into(),
                size: None,
                batch: 2,
                steps: 2,
                warmup: 1,
                precision: Precision::Fp32,
                channels_last: true,
                device: "cpu".into(),
                threads: None,
            };
            let v = model_bench(&args, mode, Device::Cpu).unwrap();
            assert!(v["img_per_s"].as_f64().unwrap() > 0.0, "{v}");
            assert!(v["gflop_per_image"].as_f64().unwrap() > 0.0, "{v}");
            assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
        }
    }
}
