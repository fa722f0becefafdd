//! The training objective: the (optionally weighted) MSE between the
//! model's output on a noised batch and its target.

use schedule::Schedule;
use tch::{Kind, Tensor};
use unet::UNet;

use crate::config::NoiseConfig;
use crate::Result;

/// One micro-batch of the objective: clean images, the noise drawn for them,
/// their timesteps and (class-conditional models) their labels after label
/// dropout.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub x0: &'a Tensor,
    pub noise: &'a Tensor,
    /// `[N]` integer timesteps.
    pub t: &'a Tensor,
    pub labels: Option<&'a Tensor>,
}

/// The training loss of one micro-batch: the (optionally weighted) MSE
/// between the model's output on x_t and its target for the prediction
/// type, averaged over the batch, as an f32 scalar ready for `backward`.
///
/// With `precision` bf16 the U-Net's forward pass runs under autocast (and
/// so, by autograd, its backward pass); the noising, the target and the loss
/// stay in f32. Dropout is on.
pub fn objective(
    unet: &UNet,
    schedule: &Schedule,
    noise_config: &NoiseConfig,
    precision: tensor::Precision,
    batch: &Batch<'_>,
) -> Result<Tensor> {
    let x_t = schedule.add_noise(batch.x0, batch.noise, batch.t)?;
    let device = unet.model.device();
    let pred = tensor::amp::autocast(device, precision, || {
        unet.forward_t(&x_t, batch.t, batch.labels, true)
    })??
    .to_kind(Kind::Float);
    let target = schedule.target(noise_config.prediction_type, batch.x0, batch.noise, batch.t)?;
    let per_sample = (pred - target)
        .square()
        .mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float);
    let w = noise_config.loss_weighting.weights(
        schedule,
        noise_config.prediction_type,
        batch.t,
        Kind::Float,
    )?;
    Ok((per_sample * w).mean(Kind::Float))
}
