//! `lmzh bench`: how fast this machine trains and samples, with the
//! product's own code paths on a random-weight model.
//!
//! - `lmzh bench train`: optimiser steps of the trainer, `Trainer::step`
//!   itself (the draws, the objective, backward, the divergence guard's one
//!   host read, clipping, AdamW, EMA), on a fixed batch of random images of
//!   the layout's shape.
//! - `lmzh bench sample`: one DPM-Solver++(2M) sampling run of `--steps`
//!   model evaluations (`sampler::sample`), with the sampler's forward.
//! - `lmzh bench text`: the denoising loop of a text-to-image pipeline
//!   (`--layout sd15`: Stable Diffusion 1.5's U-Net, random weights) at
//!   `--size` pixels (latents of size / 8): `--steps` DDIM steps with
//!   classifier-free guidance 7.5 on 77-token prompt embeddings, as
//!   diffusers' `StableDiffusionPipeline` runs them.
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
use schedule::SchedulerConfig;
use tensor::tch::{self, Device, Kind, Tensor};
use tensor::Precision;
use trainer::{MicroBatch, TrainConfig, Trainer};
use unet::{UNet, UNetConditionConfig, UNetConfig};

/// Flags of `lmzh bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// train, sample, text or matmul.
    #[arg(value_parser = ["train", "sample", "text", "matmul"])]
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

    /// sample: classifier-free guidance scale (1: none). Guidance runs the
    /// model on a conditional and an unconditional branch (label 0 and 1,
    /// which the random-weight model ignores: what is timed is the cost of
    /// the two branches).
    #[arg(long, default_value_t = 1.0)]
    pub guidance_scale: f64,

    /// sample: how the two guidance branches run: `auto` (batched on a GPU
    /// and for small CPU batches), `batched` (one forward pass of twice the
    /// batch) or `sequential` (one after the other).
    #[arg(long, value_name = "auto|batched|sequential", default_value = "auto")]
    pub guidance_batching: sampler::Batching,
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
        "text" => text_bench(args, device)?,
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
    let shape = [args.batch, cfg.in_channels, h, w];
    let (seconds, unet, flops_per_image) = match mode {
        "train" => {
            let mut trainer = bench_trainer(args, &cfg)?;
            let seconds = train(&mut trainer, args, shape, device)?;
            let unet = trainer.unet().context("the bench trains a UNet2DModel")?;
            let forward = forward_flops(unet, h, w)?;
            (seconds, unet.num_parameters(), 3 * forward)
        }
        _ => {
            tensor::seed::seed_everything(0);
            let mut unet = UNet::new(&cfg, device)?;
            if args.channels_last {
                unet.to_channels_last();
            }
            let seconds = sample(&unet, args, shape, device)?;
            (seconds, unet.num_parameters(), forward_flops(&unet, h, w)?)
        }
    };
    let images = args.batch as usize * args.steps;
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
        "parameters": unet,
        "steps": args.steps,
        "seconds": seconds,
        "img_per_s": img_per_s,
        "gflop_per_image": flops_per_image as f64 / 1e9,
        "gflop_per_s": img_per_s * flops_per_image as f64 / 1e9,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// FLOPs of one forward pass at `h` x `w`.
fn forward_flops(unet: &UNet, h: i64, w: i64) -> Result<u64> {
    Ok(unet.model.flops(h, w)?.iter().map(|(_, f)| f).sum())
}

/// The trainer `lmzh bench train` times: a random-weight U-Net of `cfg`
/// under the default training settings (AdamW, EMA, epsilon objective) with
/// the flags' batch, precision, memory format and device, and no data source.
pub fn bench_trainer(args: &Args, cfg: &UNetConfig) -> Result<Trainer> {
    let mut config = TrainConfig {
        device: args.device.parse()?,
        mixed_precision: args.precision,
        channels_last: args.channels_last,
        steps: (args.warmup + args.steps) as u64,
        batch_size: args.batch as usize,
        grad_accum: 1,
        noise: trainer::config::NoiseConfig::default(),
        ..TrainConfig::default()
    };
    config.model.class_conditional = false;
    Ok(Trainer::for_model(config, cfg)?)
}

/// The fixed batch the bench trains on: uniform random images in [-1, 1].
pub fn bench_batch(shape: [i64; 4], device: Device) -> MicroBatch {
    tch::manual_seed(0);
    MicroBatch {
        images: Tensor::rand(shape, (Kind::Float, device)) * 2.0 - 1.0,
        labels: None,
        captions: None,
    }
}

/// Seconds for `args.steps` optimiser steps of `trainer`, after the warm-up.
fn train(trainer: &mut Trainer, args: &Args, shape: [i64; 4], device: Device) -> Result<f64> {
    let batch = [bench_batch(shape, device)];
    let step = |trainer: &mut Trainer| -> Result<()> {
        let out = trainer.step(&batch)?;
        if out.skipped {
            bail!("the loss went non-finite at step {}", out.step);
        }
        Ok(())
    };
    for _ in 0..args.warmup {
        step(trainer)?;
    }
    let start = Instant::now();
    for _ in 0..args.steps {
        step(trainer)?;
    }
    sync(device);
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds for one sampling run of `args.steps` model evaluations.
fn sample(unet: &UNet, args: &Args, shape: [i64; 4], device: Device) -> Result<f64> {
    let config = SchedulerConfig::ddpm();
    // The layouts are unconditional: the labels only select the branch.
    let unconditional = |x: &Tensor, t: &Tensor, _c: &sampler::Cond| -> sampler::Result<Tensor> {
        Ok(unet.forward(x, t, None)?)
    };
    let model = sampler::Autocast::new(&unconditional, args.precision);
    let x_t = Tensor::randn(shape, (Kind::Float, device));
    let labels = |v: i64| sampler::Cond::labels(Tensor::full([shape[0]], v, (Kind::Int64, device)));
    let mut conditioning = sampler::Conditioning::guided(labels(0), args.guidance_scale, labels(1));
    if let Some(g) = conditioning.guidance.as_mut() {
        g.batching = args.guidance_batching;
    }
    let warmup = (args.warmup > 0).then_some(2);
    timed_sampling(
        &model,
        "dpm++2m",
        &config,
        &x_t,
        &conditioning,
        warmup,
        args.steps,
        device,
    )
}

/// Seconds for one sampling run of `steps` steps of solver `name` from
/// `x_t`, after an untimed run of `warmup` steps when given; the result is
/// read back once, as the sampler does when it writes images.
#[allow(clippy::too_many_arguments)]
fn timed_sampling(
    model: &dyn sampler::Denoiser,
    name: &str,
    config: &SchedulerConfig,
    x_t: &Tensor,
    conditioning: &sampler::Conditioning,
    warmup: Option<usize>,
    steps: usize,
    device: Device,
) -> Result<f64> {
    let run = |steps: usize| -> Result<()> {
        let mut solver = sampler::by_name(name, config, steps, &sampler::SolverOptions::default())?;
        let out = sampler::sample(
            model,
            solver.as_mut(),
            x_t,
            conditioning,
            &mut sampler::TorchRng,
            &mut |_| {},
        )?;
        let _ = out.to_device(Device::Cpu);
        Ok(())
    };
    if let Some(w) = warmup {
        run(w)?;
    }
    let start = Instant::now();
    run(steps)?;
    sync(device);
    Ok(start.elapsed().as_secs_f64())
}

/// The text-conditioned U-Net of `name`: `sd15` (Stable Diffusion 1.5's,
/// 860 M parameters) or `sd-tiny` (a 0.2 M-parameter one of the same
/// layout, for tests).
pub fn text_layout(name: &str) -> Result<UNetConditionConfig> {
    use unet::condition_config::PerBlock;
    match name {
        "sd15" => Ok(UNetConditionConfig::stable_diffusion_v1()),
        "sd-tiny" => Ok(UNetConditionConfig {
            block_out_channels: vec![16, 32],
            down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
            layers_per_block: PerBlock::One(1),
            cross_attention_dim: PerBlock::One(16),
            attention_head_dim: PerBlock::One(2),
            norm_num_groups: 8,
            ..UNetConditionConfig::stable_diffusion_v1()
        }),
        other => bail!("--layout {other:?}: the text bench takes sd15 or sd-tiny"),
    }
}

/// `lmzh bench text`: seconds per image of the guided denoising loop.
fn text_bench(args: &Args, device: Device) -> Result<serde_json::Value> {
    let layout = if args.layout == "grey32" {
        "sd15"
    } else {
        args.layout.as_str()
    };
    let cfg = text_layout(layout)?;
    let size = args.size.unwrap_or(256);
    if size % 8 != 0 {
        bail!("--size {size}: expected a multiple of 8 (the VAE's factor)");
    }
    tensor::seed::seed_everything(0);
    let build = Instant::now();
    let unet = tch::no_grad(|| unet::ConditionUNet::new(&cfg, device))?;
    let build_seconds = build.elapsed().as_secs_f64();
    let latents = Tensor::randn([args.batch, 4, size / 8, size / 8], (Kind::Float, device));
    let width = cfg.encoder_width();
    let prompt = Tensor::randn([args.batch, 77, width], (Kind::Float, device));
    let negative = Tensor::randn([1, 77, width], (Kind::Float, device));
    let conditioning = sampler::Conditioning::guided(
        sampler::Cond::text(prompt, None),
        7.5,
        sampler::Cond::text(negative, None),
    );
    let model = sampler::Autocast::new(&unet, args.precision);
    let scheduler = SchedulerConfig::from_json_str(
        r#"{"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "steps_offset": 1, "clip_sample": false, "set_alpha_to_one": false}"#,
    )?;
    let warmup = (args.warmup > 0).then_some(1);
    let seconds = timed_sampling(
        &model,
        "ddim",
        &scheduler,
        &latents,
        &conditioning,
        warmup,
        args.steps,
        device,
    )?;
    Ok(serde_json::json!({
        "mode": "text",
        "layout": layout,
        "size": size,
        "batch": args.batch,
        "steps": args.steps,
        "guidance_scale": 7.5,
        "precision": args.precision.to_string(),
        "device": format!("{device:?}"),
        "threads": tch::get_num_threads(),
        "parameters": unet.num_parameters(),
        "build_seconds": build_seconds,
        "seconds": seconds,
        "seconds_per_image": seconds / args.batch as f64,
        "peak_rss_mb": peak_rss_mb(),
    }))
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

    /// Two steps of the tiny layout on the CPU, batch 2.
    fn tiny(mode: &str) -> Args {
        Args {
            mode: mode.into(),
            layout: "tiny".into(),
            size: None,
            batch: 2,
            steps: 2,
            warmup: 1,
            precision: Precision::Fp32,
            channels_last: false,
            device: "cpu".into(),
            threads: None,
            guidance_scale: 1.0,
            guidance_batching: sampler::Batching::Auto,
        }
    }

    #[test]
    fn grey32_is_the_documented_model() {
        let _rng = crate::torch_rng_lock();
        let cfg = layout("grey32", None).unwrap();
        let unet = UNet::new(&cfg, Device::Cpu).unwrap();
        assert_eq!(unet.num_parameters(), 6_801_409);
        let err = layout("nope", None).unwrap_err().to_string();
        assert!(err.contains("--layout") && err.contains("grey32"), "{err}");
        let big = layout("grey32", Some(64)).unwrap();
        assert_eq!(big.sample_hw(), Some((64, 64)));
    }

    #[test]
    fn the_train_bench_times_the_trainers_own_step() {
        let _rng = crate::torch_rng_lock();
        let args = tiny("train");
        let cfg = layout(&args.layout, None).unwrap();
        let shape = [2, cfg.in_channels, 8, 8];
        let mut benched = bench_trainer(&args, &cfg).unwrap();
        train(&mut benched, &args, shape, Device::Cpu).unwrap();
        // The same three steps through `Trainer::step`, the training loop's step.
        let mut direct = bench_trainer(&args, &cfg).unwrap();
        let batch = [bench_batch(shape, Device::Cpu)];
        for _ in 0..3 {
            assert!(!direct.step(&batch).unwrap().skipped);
        }
        assert_eq!(benched.steps_done(), 3);
        assert_eq!(benched.params_digest(), direct.params_digest());
        let ema = |t: &Trainer| trainer::distributed::digest(t.ema().shadow());
        assert_eq!(ema(&benched), ema(&direct));
    }

    #[test]
    fn the_text_bench_times_a_guided_loop() {
        let _rng = crate::torch_rng_lock();
        let args = Args {
            layout: "sd-tiny".into(),
            size: Some(64),
            batch: 1,
            steps: 2,
            ..tiny("text")
        };
        let v = text_bench(&args, Device::Cpu).unwrap();
        assert_eq!(v["mode"], "text");
        assert!(v["seconds_per_image"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["parameters"].as_i64().unwrap() > 100_000, "{v}");
        let bad = Args {
            size: Some(60),
            ..args
        };
        assert!(text_bench(&bad, Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("--size 60"));
        assert_eq!(text_layout("sd15").unwrap().encoder_width(), 768);
    }

    #[test]
    fn a_tiny_train_and_sample_bench_report_throughput() {
        let _rng = crate::torch_rng_lock();
        for mode in ["train", "sample"] {
            let args = Args {
                channels_last: true,
                guidance_scale: if mode == "sample" { 2.0 } else { 1.0 },
                ..tiny(mode)
            };
            let v = model_bench(&args, mode, Device::Cpu).unwrap();
            assert!(v["img_per_s"].as_f64().unwrap() > 0.0, "{v}");
            assert!(v["gflop_per_image"].as_f64().unwrap() > 0.0, "{v}");
            assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
        }
    }
}
