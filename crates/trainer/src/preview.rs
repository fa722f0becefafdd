//! Sample grids during training: the same fixed noise (and, for
//! class-conditional models, one column per class; for text-conditioned
//! ones, one column per prompt) at every sampling step, so that consecutive
//! grids show the model improving.

use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use unet::UNet;

use crate::config::{LogConfig, TrainConfig};
use crate::model::TextModel;
use crate::Result;

/// The fixed noise `[M, C, H, W]` (`shape` is `[C, H, W]`: the images', or
/// the latents' in latent mode) and labels (`i % classes`) of a run's grids.
pub fn fixed_inputs(
    config: &TrainConfig,
    shape: [i64; 3],
    num_classes: usize,
    device: Device,
) -> (Tensor, Option<Tensor>) {
    let m = config.log.sample_images.max(1) as i64;
    let gen_seed = tensor::seed::derive_seed(config.seed, "preview-noise");
    // Every training step reseeds libtorch's generator from (seed, step), so
    // this draw does not move the training stream.
    tch::manual_seed(gen_seed as i64);
    let shape = [m, shape[0], shape[1], shape[2]];
    let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_device(device);
    let labels = (num_classes > 0).then(|| {
        Tensor::arange(m, (Kind::Int64, Device::Cpu))
            .remainder(num_classes as i64)
            .to_device(device)
    });
    (noise, labels)
}

/// Which solver, how many steps and how much guidance.
#[derive(Debug, Clone, Copy)]
pub struct SolverSpec<'a> {
    pub sampler: &'a str,
    pub steps: usize,
    pub guidance_scale: f64,
}

impl<'a> From<&'a LogConfig> for SolverSpec<'a> {
    fn from(log: &'a LogConfig) -> Self {
        SolverSpec {
            sampler: &log.sampler,
            steps: log.sample_steps,
            guidance_scale: log.guidance_scale,
        }
    }
}

/// Samples images from `noise` with the given solver.
pub fn sample(
    unet: &UNet,
    scheduler: &SchedulerConfig,
    noise: &Tensor,
    labels: Option<&Tensor>,
    null_label: Option<i64>,
    spec: SolverSpec<'_>,
) -> Result<Tensor> {
    let options = sampler::SolverOptions::default();
    let mut solver = sampler::by_name(spec.sampler, scheduler, spec.steps, &options)?;
    let guided = labels.is_some() && null_label.is_some() && spec.guidance_scale != 1.0;
    let scale = if guided { spec.guidance_scale } else { 1.0 };
    let conditioning =
        sampler::Conditioning::class(labels.map(Tensor::shallow_clone), scale, null_label)?;
    let out = sampler::sample(
        unet,
        solver.as_mut(),
        noise,
        &conditioning,
        &mut sampler::TorchRng,
        &mut |_| {},
    )?;
    Ok(out.clamp(-1.0, 1.0))
}

/// Samples images from `noise` with a text-conditioned model: image `i`
/// shows `prompts[i % prompts.len()]` (so a grid of `prompts.len()` columns
/// has one prompt per column), guided against the empty prompt. In latent
/// mode `noise` is latent-shaped and the result is decoded by the VAE.
pub fn sample_text(
    model: &TextModel,
    scheduler: &SchedulerConfig,
    noise: &Tensor,
    prompts: &[String],
    spec: SolverSpec<'_>,
) -> Result<Tensor> {
    let options = sampler::SolverOptions::default();
    let mut solver = sampler::by_name(spec.sampler, scheduler, spec.steps, &options)?;
    let empty = [String::new()];
    let prompts = if prompts.is_empty() {
        &empty[..]
    } else {
        prompts
    };
    let m = noise.size()[0] as usize;
    let captions: Vec<String> = (0..m).map(|i| prompts[i % prompts.len()].clone()).collect();
    let cond = sampler::Cond::text(model.encode(&captions, false)?, None);
    let conditioning = if spec.guidance_scale != 1.0 {
        let uncond = sampler::Cond::text(model.encode(&empty, false)?, None);
        sampler::Conditioning {
            cond,
            guidance: Some(sampler::Guidance::new(spec.guidance_scale, uncond)),
        }
    } else {
        sampler::Conditioning::from(cond)
    };
    let out = tch::no_grad(|| {
        sampler::sample(
            &model.unet,
            solver.as_mut(),
            noise,
            &conditioning,
            &mut sampler::TorchRng,
            &mut |_| {},
        )
    })?;
    Ok(model.to_images(&out)?.clamp(-1.0, 1.0))
}
