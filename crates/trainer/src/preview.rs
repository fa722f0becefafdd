//! Sample grids during training: the same fixed noise (and, for
//! class-conditional models, one column per class) at every sampling step,
//! so that consecutive grids show the model improving.

use data_pipeline::preprocess::Chw;
use schedule::SchedulerConfig;
use tch::{Device, Kind, Tensor};
use unet::UNet;

use crate::config::{LogConfig, TrainConfig};
use crate::Result;

/// The fixed noise `[M, C, H, W]` and labels (`i % classes`) of a run's grids.
pub fn fixed_inputs(
    config: &TrainConfig,
    probe: &Chw,
    num_classes: usize,
    device: Device,
) -> (Tensor, Option<Tensor>) {
    let m = config.log.sample_images.max(1) as i64;
    let gen_seed = tensor::seed::derive_seed(config.seed, "preview-noise");
    // Every training step reseeds libtorch's generator from (seed, step), so
    // this draw does not move the training stream.
    tch::manual_seed(gen_seed as i64);
    let shape = [
        m,
        probe.channels as i64,
        probe.height as i64,
        probe.width as i64,
    ];
    let noise = Tensor::randn(shape, (Kind::Float, Device::Cpu)).to_device(device);
    let labels = (num_classes > 0).then(|| {
        Tensor::arange(m, (Kind::Int64, Device::Cpu))
            .remainder(num_classes as i64)
            .to_device(device)
    });
    (noise, labels)
}

/// Samples images from `noise` with the run's preview sampler.
pub fn sample(
    unet: &UNet,
    scheduler: &SchedulerConfig,
    noise: &Tensor,
    labels: Option<&Tensor>,
    null_label: Option<i64>,
    log: &LogConfig,
) -> Result<Tensor> {
    let options = sampler::SolverOptions::default();
    let mut solver = sampler::by_name(&log.sampler, scheduler, log.sample_steps, &options)?;
    let guided = labels.is_some() && null_label.is_some() && log.guidance_scale != 1.0;
    let conditioning = sampler::Conditioning {
        class_labels: labels,
        guidance_scale: if guided { log.guidance_scale } else { 1.0 },
        null_label,
    };
    let model = |x: &Tensor, t: &Tensor, c: Option<&Tensor>| Ok(unet.forward(x, t, c)?);
    let out = sampler::sample(
        &model,
        solver.as_mut(),
        noise,
        &conditioning,
        &mut sampler::TorchRng,
        &mut |_| {},
    )?;
    Ok(out.clamp(-1.0, 1.0))
}
