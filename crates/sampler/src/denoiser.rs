//! What the sampling loop, guidance and editing call: a [`Denoiser`], and
//! the conditioning [`Cond`] it is given.
//!
//! A denoiser is anything that maps a noisy sample x_t, its timesteps and a
//! conditioning to the model's output (ε, v or x_0, as its scheduler config
//! says): the U-Nets (`UNet`, and `ConditionUNet` for text), a closure
//! `|x, t, cond| -> Result<Tensor>` (blanket impl), or a wrapper such as
//! [`Autocast`]. The loop takes `&dyn Denoiser` and never needs to know
//! which.
//!
//! [`Cond`] carries what diffusion models condition on:
//!
//! - `class_labels`: `[N]` integer labels (class-conditional models);
//! - `encoder_hidden_states` (+ `encoder_attention_mask`): `[N, L, D]`
//!   text embeddings for cross-attention (text-to-image models);
//! - `extra_channels`: `[N, C', H, W]` concatenated to x_t along the
//!   channels before the model sees it (the masked-image latents and mask
//!   of inpainting models, neighbouring slices of a volume).
//!
//! ```
//! use sampler::{Cond, Denoiser};
//! use tch::{Device, Kind, Tensor};
//!
//! // A toy denoiser: predicts ε = 0.1 x_t, ignoring t and the labels.
//! let model = |x: &Tensor, _t: &Tensor, _c: &Cond| -> sampler::Result<Tensor> { Ok(x * 0.1) };
//! let x = Tensor::ones([2, 1, 4, 4], (Kind::Float, Device::Cpu));
//! let t = Tensor::from_slice(&[999i64, 999]);
//! let out = model.forward(&x, &t, &Cond::labels(Tensor::from_slice(&[3i64, 7])))?;
//! assert_eq!(out.size(), [2, 1, 4, 4]);
//! # Ok::<(), sampler::Error>(())
//! ```

use tch::{Kind, Tensor};
use unet::{ConditionUNet, UNet};

use crate::{Error, Result};

/// A denoising model: `(x_t [N, C, ..], t [N], cond) -> output [N, C or 2C, ..]`.
pub trait Denoiser {
    /// The model's output for the noisy samples `x_t` at timesteps `t`.
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor>;
}

impl<F> Denoiser for F
where
    F: Fn(&Tensor, &Tensor, &Cond) -> Result<Tensor>,
{
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor> {
        self(x_t, t, cond)
    }
}

/// diffusers' `UNet2DModel`: class labels and extra input channels; it has
/// no cross-attention, so text embeddings are an error.
impl Denoiser for UNet {
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor> {
        if cond.encoder_hidden_states.is_some() {
            return Err(Error::Unsupported(
                "encoder_hidden_states given to a UNet2DModel, which has no cross-attention \
                 (a text-conditioned model is a UNet2DConditionModel)"
                    .into(),
            ));
        }
        let input = cond.model_input(x_t)?;
        Ok(UNet::forward(self, &input, t, cond.class_labels.as_ref())?)
    }
}

/// The text-conditioned U-Net: `encoder_hidden_states` (and its mask) are
/// required, class labels and extra channels are used when given.
impl Denoiser for ConditionUNet {
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor> {
        let states = cond.encoder_hidden_states.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "a UNet2DConditionModel needs encoder_hidden_states (text embeddings; the \
                 unconditional branch is the empty prompt's)"
                    .into(),
            )
        })?;
        let input = cond.model_input(x_t)?;
        let conditioning = unet::unet_2d_condition::Conditioning {
            encoder_hidden_states: states,
            encoder_attention_mask: cond.encoder_attention_mask.as_ref(),
            class_labels: cond.class_labels.as_ref(),
        };
        Ok(ConditionUNet::forward(self, &input, t, conditioning)?)
    }
}

/// Runs a denoiser inside an autocast region of `precision` (bf16/fp16
/// compute, f32 weights) and returns its output in f32; with
/// [`tensor::Precision::Fp32`] it is the denoiser itself.
#[derive(Clone, Copy)]
pub struct Autocast<'a> {
    inner: &'a dyn Denoiser,
    precision: tensor::Precision,
}

impl std::fmt::Debug for Autocast<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autocast")
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

impl<'a> Autocast<'a> {
    /// `inner` run in `precision`.
    pub fn new(inner: &'a dyn Denoiser, precision: tensor::Precision) -> Self {
        Autocast { inner, precision }
    }
}

impl Denoiser for Autocast<'_> {
    fn forward(&self, x_t: &Tensor, t: &Tensor, cond: &Cond) -> Result<Tensor> {
        let out = tensor::amp::autocast(x_t.device(), self.precision, || {
            self.inner.forward(x_t, t, cond)
        })??;
        Ok(out.f_to_kind(Kind::Float)?)
    }
}

/// What a denoiser is conditioned on, per sample of the batch. Every field
/// is optional; [`Cond::default`] is the unconditional model.
#[derive(Debug, Default)]
pub struct Cond {
    /// `[N]` integer class labels.
    pub class_labels: Option<Tensor>,
    /// `[N, L, D]` embeddings the model cross-attends to (text).
    pub encoder_hidden_states: Option<Tensor>,
    /// `[N, L]` 1 for the tokens to attend to, 0 for padding.
    pub encoder_attention_mask: Option<Tensor>,
    /// `[N, C', H, W]` concatenated to x_t along the channels.
    pub extra_channels: Option<Tensor>,
}

impl Cond {
    /// Class labels only.
    pub fn labels(labels: Tensor) -> Self {
        Cond {
            class_labels: Some(labels),
            ..Cond::default()
        }
    }

    /// Text embeddings (and their attention mask) only.
    pub fn text(hidden_states: Tensor, attention_mask: Option<Tensor>) -> Self {
        Cond {
            encoder_hidden_states: Some(hidden_states),
            encoder_attention_mask: attention_mask,
            ..Cond::default()
        }
    }

    /// The same conditioning with `channels` concatenated to x_t.
    pub fn with_extra_channels(mut self, channels: Tensor) -> Self {
        self.extra_channels = Some(channels);
        self
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(Option::is_none)
    }

    fn fields(&self) -> [Option<&Tensor>; 4] {
        [
            self.class_labels.as_ref(),
            self.encoder_hidden_states.as_ref(),
            self.encoder_attention_mask.as_ref(),
            self.extra_channels.as_ref(),
        ]
    }

    fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Cond> {
        let g = |t: &Option<Tensor>| t.as_ref().map(&f).transpose();
        Ok(Cond {
            class_labels: g(&self.class_labels)?,
            encoder_hidden_states: g(&self.encoder_hidden_states)?,
            encoder_attention_mask: g(&self.encoder_attention_mask)?,
            extra_channels: g(&self.extra_channels)?,
        })
    }

    /// A cheap copy sharing the tensors.
    pub fn shallow_clone(&self) -> Cond {
        self.map(|t| Ok(t.shallow_clone()))
            .expect("shallow clones cannot fail")
    }

    /// Samples `start..start + len` of the batch; fields of batch 1 (shared
    /// by every sample) are kept whole.
    pub fn narrow(&self, start: i64, len: i64) -> Result<Cond> {
        self.map(|t| {
            Ok(if t.size().first() == Some(&1) {
                t.shallow_clone()
            } else {
                t.f_narrow(0, start, len)?
            })
        })
    }

    /// Every tensor on `device`.
    pub fn to_device(&self, device: tch::Device) -> Result<Cond> {
        self.map(|t| Ok(t.f_to_device(device)?))
    }

    /// Checks every tensor against a batch of samples of shape `size`
    /// (`[N, C, H, W..]`), and repeats batch-1 tensors to N (one negative
    /// prompt for the whole batch, say).
    pub fn for_batch(&self, size: &[i64]) -> Result<Cond> {
        let n = size[0];
        let fit = |t: &Tensor, what: &str, rank: usize| -> Result<Tensor> {
            let s = t.size();
            if s.len() != rank || (s[0] != n && s[0] != 1) {
                return Err(Error::Shape(format!(
                    "{what} has shape {s:?}: expected {rank} dimensions with {n} (or 1) first, \
                     for samples of shape {size:?}"
                )));
            }
            if s[0] == n {
                return Ok(t.shallow_clone());
            }
            let mut reps = vec![1i64; rank];
            reps[0] = n;
            Ok(t.f_repeat(&reps)?)
        };
        let class_labels = match &self.class_labels {
            Some(l) if l.size() == [n] => Some(l.shallow_clone()),
            Some(l) if l.size() == [1] => Some(l.f_repeat([n])?),
            Some(l) => {
                return Err(Error::Labels(format!(
                    "shape {:?}: expected one label per sample, [{n}] (or one for all, [1])",
                    l.size()
                )))
            }
            None => None,
        };
        let extra_channels = match &self.extra_channels {
            Some(e) => {
                let e = fit(e, "extra_channels", size.len())?;
                if e.size()[2..] != size[2..] {
                    return Err(Error::Shape(format!(
                        "extra_channels has shape {:?}: its spatial size must be the samples' \
                         {:?}",
                        e.size(),
                        &size[2..]
                    )));
                }
                Some(e)
            }
            None => None,
        };
        let hidden = self
            .encoder_hidden_states
            .as_ref()
            .map(|h| fit(h, "encoder_hidden_states", 3))
            .transpose()?;
        let mask = self
            .encoder_attention_mask
            .as_ref()
            .map(|m| fit(m, "encoder_attention_mask", 2))
            .transpose()?;
        if let (Some(h), Some(m)) = (&hidden, &mask) {
            if m.size()[1] != h.size()[1] {
                return Err(Error::Shape(format!(
                    "encoder_attention_mask has shape {:?} but encoder_hidden_states {:?}: \
                     expected one mask entry per token",
                    m.size(),
                    h.size()
                )));
            }
        }
        Ok(Cond {
            class_labels,
            encoder_hidden_states: hidden,
            encoder_attention_mask: mask,
            extra_channels,
        })
    }

    /// An error naming the first field that one of `self` and `other` sets
    /// and the other does not (the two branches of guidance must agree).
    pub fn check_same_fields(&self, other: &Cond) -> Result<()> {
        const NAMES: [&str; 4] = [
            "class_labels",
            "encoder_hidden_states",
            "encoder_attention_mask",
            "extra_channels",
        ];
        let pairs = self.fields().into_iter().zip(other.fields());
        match NAMES
            .iter()
            .zip(pairs)
            .find(|(_, (a, b))| a.is_some() != b.is_some())
        {
            Some((what, _)) => Err(Error::Unsupported(format!(
                "{what} is set in one branch of classifier-free guidance only: the \
                 conditional and the unconditional branch must set the same fields"
            ))),
            None => Ok(()),
        }
    }

    /// `self` then `other` along the batch, for one forward pass of both
    /// (the two must set the same fields).
    pub fn cat(&self, other: &Cond) -> Result<Cond> {
        self.check_same_fields(other)?;
        let pair = |a: &Option<Tensor>, b: &Option<Tensor>| match (a, b) {
            (Some(a), Some(b)) => Ok::<_, Error>(Some(Tensor::f_cat(&[a, b], 0)?)),
            _ => Ok(None),
        };
        Ok(Cond {
            class_labels: pair(&self.class_labels, &other.class_labels)?,
            encoder_hidden_states: pair(&self.encoder_hidden_states, &other.encoder_hidden_states)?,
            encoder_attention_mask: pair(
                &self.encoder_attention_mask,
                &other.encoder_attention_mask,
            )?,
            extra_channels: pair(&self.extra_channels, &other.extra_channels)?,
        })
    }

    /// x_t with the extra channels concatenated (x_t itself when there are
    /// none), in x_t's kind.
    pub fn model_input(&self, x_t: &Tensor) -> Result<Tensor> {
        Ok(match &self.extra_channels {
            Some(e) => Tensor::f_cat(&[x_t, &e.f_to_kind(x_t.kind())?], 1)?,
            None => x_t.shallow_clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn opts() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    #[test]
    fn batch_one_fields_repeat_and_bad_shapes_are_named() {
        let c = Cond::text(Tensor::ones([1, 3, 8], opts()), None)
            .with_extra_channels(Tensor::ones([1, 2, 4, 4], opts()));
        let b = c.for_batch(&[5, 1, 4, 4]).unwrap();
        assert_eq!(b.encoder_hidden_states.unwrap().size(), [5, 3, 8]);
        assert_eq!(b.extra_channels.unwrap().size(), [5, 2, 4, 4]);
        let e = c.for_batch(&[5, 1, 8, 8]).unwrap_err().to_string();
        assert!(e.contains("extra_channels") && e.contains("spatial"), "{e}");
        let e = Cond::labels(Tensor::from_slice(&[1i64, 2]))
            .for_batch(&[3, 1, 4, 4])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[3]"), "{e}");
        let m = Cond::text(
            Tensor::ones([2, 3, 8], opts()),
            Some(Tensor::ones([2, 4], opts())),
        );
        let e = m.for_batch(&[2, 1, 4, 4]).unwrap_err().to_string();
        assert!(e.contains("encoder_attention_mask"), "{e}");
    }

    #[test]
    fn cat_needs_the_same_fields_and_extra_channels_reach_the_input() {
        let a = Cond::labels(Tensor::from_slice(&[1i64]));
        let b = Cond::labels(Tensor::from_slice(&[9i64]));
        let both = a.cat(&b).unwrap();
        assert_eq!(
            Vec::<i64>::try_from(both.class_labels.unwrap()).unwrap(),
            [1, 9]
        );
        assert!(a.cat(&Cond::default()).is_err());
        let x = Tensor::zeros([1, 1, 2, 2], opts());
        let c = Cond::default().with_extra_channels(Tensor::ones([1, 2, 2, 2], opts()));
        let input = c.model_input(&x).unwrap();
        assert_eq!(input.size(), [1, 3, 2, 2]);
        assert_eq!(input.sum(Kind::Float).double_value(&[]), 8.0);
    }

    #[test]
    fn unet_rejects_text_and_takes_extra_channels() {
        let cfg: unet::UNetConfig = serde_json::from_str(
            r#"{"sample_size": 8, "in_channels": 3, "out_channels": 1,
                "block_out_channels": [8, 8], "layers_per_block": 1, "norm_num_groups": 4,
                "down_block_types": ["DownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
        )
        .unwrap();
        let unet = UNet::new(&cfg, Device::Cpu).unwrap();
        let x = Tensor::zeros([2, 1, 8, 8], opts());
        let t = Tensor::from_slice(&[10i64, 10]);
        let extra = Cond::default().with_extra_channels(Tensor::ones([2, 2, 8, 8], opts()));
        let model: &dyn Denoiser = &unet;
        assert_eq!(model.forward(&x, &t, &extra).unwrap().size(), [2, 1, 8, 8]);
        let text = Cond::text(Tensor::ones([2, 3, 8], opts()), None);
        let e = model.forward(&x, &t, &text).unwrap_err().to_string();
        assert!(e.contains("cross-attention"), "{e}");
        let fp32 = Autocast::new(model, tensor::Precision::Fp32);
        let a = fp32.forward(&x, &t, &extra).unwrap();
        let b = model.forward(&x, &t, &extra).unwrap();
        assert!(a.equal(&b));
    }
}
