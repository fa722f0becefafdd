//! The training objective: the (optionally weighted) MSE between the
//! model's output on a noised batch and its target.

use schedule::Schedule;
use tch::{Kind, Tensor};
use unet::{ConditionUNet, UNet};

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
    let device = unet.model.device();
    objective_of(schedule, noise_config, batch, |x_t| {
        Ok(tensor::amp::autocast(device, precision, || {
            unet.forward_t(x_t, batch.t, batch.labels, true)
        })??)
    })
}

/// [`objective`] for a text-to-image U-Net: the same loss, with the
/// U-Net attending to `encoder_hidden_states` (`[N, L, D]`, the text
/// encoder's output for the batch's captions; gradients flow back into
/// the text encoder when it is trained). `batch.labels` is unused.
pub fn text_objective(
    unet: &ConditionUNet,
    encoder_hidden_states: &Tensor,
    schedule: &Schedule,
    noise_config: &NoiseConfig,
    precision: tensor::Precision,
    batch: &Batch<'_>,
) -> Result<Tensor> {
    let device = unet.model.device();
    let cond = unet::unet_2d_condition::Conditioning::text(encoder_hidden_states);
    objective_of(schedule, noise_config, batch, |x_t| {
        Ok(tensor::amp::autocast(device, precision, || {
            unet.model.forward_t(x_t, batch.t, cond, true)
        })??)
    })
}

/// The loss of `model`'s output (on x_t, in any float kind) against the
/// target, weighted per timestep and averaged over the batch.
fn objective_of(
    schedule: &Schedule,
    noise_config: &NoiseConfig,
    batch: &Batch<'_>,
    model: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let x_t = schedule.add_noise(batch.x0, batch.noise, batch.t)?;
    let pred = model(&x_t)?.to_kind(Kind::Float);
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
