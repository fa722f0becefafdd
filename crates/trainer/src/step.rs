//! One optimiser step: [`Trainer::step`].
//!
//! Each micro-batch draws its random numbers (timesteps, noise, label
//! dropout, dropout masks; caption dropout is the loader's, decided per
//! epoch and image) from libtorch's generator seeded by (seed, step,
//! micro-batch), so a step is a pure function of the training state and its
//! images: a resumed run continues bit-identically on the CPU, and a caller
//! that feeds its own batches (`lmzh bench train`) runs exactly the step the
//! training loop runs.
//!
//! A step with a non-finite loss or gradient is skipped (no update) and
//! counted; [`Trainer::run`] stops after `log.max_bad_steps` in a row.

use tch::{Device, Kind, Tensor};

use crate::model::Model;
use crate::objective::{objective, text_objective, Batch};
use crate::trainer::Trainer;
use crate::{Error, Result};

/// The images (and labels or captions) of one micro-batch, as the data
/// loader yields them.
#[derive(Debug)]
pub struct MicroBatch {
    /// `[N, C, H, W]` float32 in [-1, 1], on any device.
    pub images: Tensor,
    /// `[N]` int64 class labels (class-conditional models).
    pub labels: Option<Tensor>,
    /// One caption per image (text-conditioned models), after caption
    /// dropout: the empty caption trains the unconditional branch.
    pub captions: Option<Vec<String>>,
}

impl From<data_pipeline::loader::Batch> for MicroBatch {
    fn from(b: data_pipeline::loader::Batch) -> Self {
        MicroBatch {
            images: b.images,
            labels: b.labels,
            captions: b.captions,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// The step's number, counted from 1 (as in `metrics.jsonl`).
    pub step: u64,
    /// Mean loss over the micro-batches (and the processes).
    pub loss: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// The loss or gradient was non-finite: no update was made.
    pub skipped: bool,
    /// Images trained on by this process.
    pub images: usize,
    /// The step's timesteps, read back only when it was skipped.
    pub timesteps: Vec<i64>,
}

impl Trainer {
    /// The next step's micro-batches (`grad_accum` of them) from the run's
    /// loader.
    pub fn next_batches(&mut self) -> Result<Vec<MicroBatch>> {
        let accum = self.config.grad_accum;
        let data = self.data.as_mut().ok_or(Error::Detached("data source"))?;
        (0..accum)
            .map(|_| Ok(data.loader.next_batch()?.into()))
            .collect()
    }

    /// Trains one optimiser step on `micro_batches` (`grad_accum` of them):
    /// noise, timesteps and label dropout drawn from (seed, step), the
    /// objective, backward, gradient accumulation, the average over the
    /// processes, the divergence guard, clipping, AdamW and the EMA.
    pub fn step(&mut self, micro_batches: &[MicroBatch]) -> Result<StepOutput> {
        let accum = self.config.grad_accum;
        if micro_batches.len() != accum {
            return Err(Error::Setting {
                key: "grad_accum".into(),
                reason: format!(
                    "a step takes {accum} micro-batch(es), got {}",
                    micro_batches.len()
                ),
            });
        }
        let step = self.step;
        let step_seed = tensor::seed::derive_seed(self.config.seed, "step") ^ step;
        let inject_nan = self.inject_nan_at == Some(step + 1);
        let mut loss_sum = Tensor::zeros([], (Kind::Float, self.device));
        let mut images = 0;
        // Kept on the device; read back only to log a skipped step.
        let mut all_t: Vec<Tensor> = Vec::new();
        for (k, mb) in micro_batches.iter().enumerate() {
            // Micro-batch g of the step, over all ranks: (seed, step) for
            // g = 0 as ever, (seed, step, g) after, so N ranks draw what one
            // process with N times the accumulation draws.
            let g = self.dist.micro_batch(k);
            let seed = if g == 0 {
                step_seed
            } else {
                tensor::seed::derive_seed(step_seed, &format!("micro-batch {g}"))
            };
            tch::manual_seed(seed as i64);
            let (mut loss, t) = self.micro_step(mb, accum)?;
            if inject_nan {
                loss *= f64::NAN;
            }
            loss.backward();
            loss_sum += loss.detach();
            images += t.size()[0] as usize;
            all_t.push(t);
        }
        if self.dist.world_size() > 1 {
            // Average the loss and the gradients over the ranks (bucketed).
            let mut all = vec![loss_sum.shallow_clone()];
            all.extend(
                self.params
                    .iter()
                    .map(|(_, p)| p.grad())
                    .filter(Tensor::defined),
            );
            self.dist.average(&all)?;
        }
        let grad_norm = self.opt.grad_norm();
        // One host sync per step: the divergence guard needs to know.
        let both = Tensor::stack(
            &[
                loss_sum.to_kind(Kind::Double),
                grad_norm.to_kind(Kind::Double).to_device(self.device),
            ],
            0,
        )
        .to_device(Device::Cpu);
        let (loss, norm) = (both.double_value(&[0]), both.double_value(&[1]));
        let lr = self.config.optim.lr_at(self.opt.step, self.config.steps);
        let finite = loss.is_finite() && norm.is_finite();
        if finite {
            self.opt.clip_grad_norm(&grad_norm);
            self.opt.step(lr);
            self.ema.update(&self.params, self.opt.step);
        }
        self.opt.zero_grad();
        self.step += 1;
        let timesteps = if finite {
            self.bad_in_a_row = 0;
            Vec::new()
        } else {
            self.bad_in_a_row += 1;
            self.skipped_steps += 1;
            all_t
                .iter()
                .flat_map(|t| Vec::<i64>::try_from(t.to_device(Device::Cpu)).unwrap_or_default())
                .collect()
        };
        Ok(StepOutput {
            step: self.step,
            loss,
            grad_norm: norm,
            lr,
            skipped: !finite,
            images,
            timesteps,
        })
    }

    /// The draws and the loss (divided by `accum`) of one micro-batch;
    /// returns the loss and the timesteps.
    fn micro_step(&self, mb: &MicroBatch, accum: usize) -> Result<(Tensor, Tensor)> {
        let device = self.device;
        let x0 = mb.images.to_device(device);
        // Latent mode: the U-Net denoises a draw from the VAE's posterior.
        let x0 = match &self.model {
            Model::Text(m) => m.model_input(&x0)?,
            Model::Plain(_) => x0,
        };
        let n = x0.size()[0];
        let t = Tensor::randint(
            self.schedule.num_train_timesteps() as i64,
            [n],
            (Kind::Int64, device),
        );
        let mut noise = x0.randn_like();
        if self.config.noise.offset_noise > 0.0 {
            let [_, c, _, _] = x0.size()[..] else {
                unreachable!("4-d batch")
            };
            noise +=
                Tensor::randn([n, c, 1, 1], (Kind::Float, device)) * self.config.noise.offset_noise;
        }
        let labels = match (self.null_label, &mb.labels) {
            (Some(null), Some(l)) => {
                let l = l.to_device(device);
                let drop =
                    Tensor::rand([n], (Kind::Float, device)).lt(self.config.model.label_dropout);
                Some(l.where_self(
                    &drop.logical_not(),
                    &Tensor::full([n], null, (Kind::Int64, device)),
                ))
            }
            _ => None,
        };
        let batch = Batch {
            x0: &x0,
            noise: &noise,
            t: &t,
            labels: labels.as_ref(),
        };
        let loss = match &self.model {
            Model::Plain(unet) => objective(
                unet,
                &self.schedule,
                &self.config.noise,
                self.config.mixed_precision,
                &batch,
            )?,
            Model::Text(m) => {
                let captions = mb.captions.as_deref().ok_or_else(|| Error::Setting {
                    key: "model.conditioning".into(),
                    reason: "a text-conditioned model trains on captioned batches; this batch \
                             has no captions"
                        .into(),
                })?;
                if captions.len() as i64 != n {
                    return Err(Error::Setting {
                        key: "captions".into(),
                        reason: format!("{} captions for a batch of {n} images", captions.len()),
                    });
                }
                let states = tensor::amp::autocast(device, self.config.mixed_precision, || {
                    m.encode(captions, true)
                })??;
                text_objective(
                    &m.unet,
                    &states,
                    &self.schedule,
                    &self.config.noise,
                    self.config.mixed_precision,
                    &batch,
                )?
            }
        } / accum as f64;
        Ok((loss, t))
    }
}
