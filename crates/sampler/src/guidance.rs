//! Classifier-free guidance (Ho & Salimans 2022) on any conditioning.
//!
//! A [`Conditioning`] is the batch's [`Cond`] plus, optionally, a
//! [`Guidance`]: a scale s and the unconditional branch, whatever the model
//! conditions on: the null label of a class model, the empty-prompt
//! embedding or a negative prompt of a text model. Each model evaluation
//! then computes uncond + s (cond - uncond). Both branches run as one
//! batched forward pass (the unconditional half first, as diffusers'
//! pipelines do) or one after the other (half the peak memory), as
//! [`Guidance::batching`] says: by default ([`Batching::Auto`]) batched on a
//! GPU and for small CPU batches, where one forward of twice the batch is
//! faster, and sequential for large CPU batches, where it is not. With a model that predicts its
//! variance (2C output channels) only the first C channels are guided and
//! the variance comes from the conditional branch.

use tch::Tensor;

use crate::denoiser::{Cond, Denoiser};
use crate::{Error, Result};

/// The unconditional branch and the scale of classifier-free guidance.
#[derive(Debug)]
pub struct Guidance {
    /// s in uncond + s (cond - uncond); 1 is the conditional output alone.
    pub scale: f64,
    /// What the unconditional branch is conditioned on; it must set the
    /// same fields as the conditional one (batch N or 1).
    pub uncond: Cond,
    /// Whether both branches run in one forward pass of twice the batch.
    pub batching: Batching,
    /// diffusers' `guidance_rescale` phi (Lin et al. 2023, "Common Diffusion
    /// Noise Schedules and Sample Steps are Flawed", section 3.4): the
    /// guided output is rescaled to the per-sample standard deviation of
    /// the conditional one, then mixed with the plain guided output, phi
    /// rescaled + (1 - phi) guided. 0 (the default) is plain guidance.
    pub rescale: f64,
}

impl Guidance {
    /// Guidance of `scale` towards the conditioning, away from `uncond`,
    /// with [`Batching::Auto`].
    pub fn new(scale: f64, uncond: Cond) -> Self {
        Guidance {
            scale,
            uncond,
            batching: Batching::Auto,
            rescale: 0.0,
        }
    }
}

/// How the two branches of classifier-free guidance run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// [`Batching::Batched`] on a GPU, and on the CPU while the doubled
    /// batch holds at most [`Batching::CPU_BATCHED_MAX_ELEMENTS`] sample
    /// elements; [`Batching::Sequential`] above that.
    #[default]
    Auto,
    /// One forward pass of twice the batch, unconditional half first (as
    /// diffusers' pipelines).
    Batched,
    /// Two forward passes, one per branch: half the peak memory.
    Sequential,
}

impl Batching {
    /// The largest doubled CPU batch, in sample elements (N · C · H · W ·
    /// 2), that [`Batching::Auto`] runs batched: 16 grey 32x32 images. On a
    /// 2-core CPU with the 1.1 M-parameter digits U-Net, batching two
    /// branches of 4 images is 1.37x faster than running them one after the
    /// other, of 16 equal, and of 64 1.3x slower with 38 % more memory
    /// (`lmzh bench sample --guidance-batching`).
    pub const CPU_BATCHED_MAX_ELEMENTS: i64 = 2 * 16 * 32 * 32;

    /// Whether samples of shape `size` on `device` run both branches in one
    /// forward pass.
    pub fn batched(self, size: &[i64], device: tch::Device) -> bool {
        match self {
            Batching::Batched => true,
            Batching::Sequential => false,
            Batching::Auto => {
                device.is_cuda()
                    || 2 * size.iter().product::<i64>() <= Self::CPU_BATCHED_MAX_ELEMENTS
            }
        }
    }
}

impl std::str::FromStr for Batching {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Batching::Auto),
            "batched" => Ok(Batching::Batched),
            "sequential" => Ok(Batching::Sequential),
            _ => Err(format!("{s:?}: expected auto, batched or sequential")),
        }
    }
}

/// The conditioning of a batch and its guidance.
#[derive(Debug, Default)]
pub struct Conditioning {
    /// What the model is conditioned on.
    pub cond: Cond,
    /// Classifier-free guidance, if any.
    pub guidance: Option<Guidance>,
}

impl From<Cond> for Conditioning {
    fn from(cond: Cond) -> Self {
        Conditioning {
            cond,
            guidance: None,
        }
    }
}

impl Conditioning {
    /// `cond` guided with `scale` away from `uncond` (no guidance when the
    /// scale is 1).
    pub fn guided(cond: Cond, scale: f64, uncond: Cond) -> Self {
        Conditioning {
            cond,
            guidance: (scale != 1.0).then(|| Guidance::new(scale, uncond)),
        }
    }

    /// A class-conditional batch: `labels` (`[N]`), guided with `scale`
    /// away from the model's unconditional label `null_label`. Errors when
    /// guidance is asked for without labels or without a null label.
    pub fn class(labels: Option<Tensor>, scale: f64, null_label: Option<i64>) -> Result<Self> {
        let Some(labels) = labels else {
            if scale != 1.0 {
                return Err(Error::Labels(format!(
                    "guidance scale {scale} needs a class-conditional model and labels"
                )));
            }
            return Ok(Conditioning::default());
        };
        if scale == 1.0 {
            return Ok(Cond::labels(labels).into());
        }
        let null = null_label.ok_or_else(|| {
            Error::Labels("classifier-free guidance needs the unconditional (null) label".into())
        })?;
        let nulls = labels.f_full_like(null)?;
        Ok(Conditioning::guided(
            Cond::labels(labels),
            scale,
            Cond::labels(nulls),
        ))
    }

    /// Samples `start..start + len` of the batch (fields of batch 1 are
    /// kept whole, see [`Cond::narrow`]).
    pub fn narrow(&self, start: i64, len: i64) -> Result<Conditioning> {
        let guidance = match &self.guidance {
            Some(g) => Some(Guidance {
                scale: g.scale,
                uncond: g.uncond.narrow(start, len)?,
                batching: g.batching,
                rescale: g.rescale,
            }),
            None => None,
        };
        Ok(Conditioning {
            cond: self.cond.narrow(start, len)?,
            guidance,
        })
    }
}

/// One model evaluation with the batch's conditioning, checked once per
/// batch: the conditional branch alone, or both branches when guiding.
#[derive(Debug)]
pub(crate) struct Guided {
    cond: Cond,
    /// With guidance: the unconditional branch, and both branches in one
    /// batch (unconditional first) when batched.
    uncond: Option<Cond>,
    both: Option<Cond>,
    scale: f64,
    rescale: f64,
    size: Vec<i64>,
    /// Batch size and channels of the samples.
    pub n: i64,
    pub c: i64,
}

impl Guided {
    /// Checks `conditioning` against samples of shape `size` (`[N, C, ..]`)
    /// on `device`.
    pub(crate) fn new(
        conditioning: &Conditioning,
        size: &[i64],
        device: tch::Device,
    ) -> Result<Self> {
        if size.len() < 2 {
            return Err(Error::Shape(format!(
                "samples of shape {size:?}: expected [N, C, ...]"
            )));
        }
        let cond = conditioning.cond.for_batch(size)?;
        let rescale = conditioning.guidance.as_ref().map_or(0.0, |g| g.rescale);
        let (uncond, both, scale) = match &conditioning.guidance {
            Some(g) if g.scale != 1.0 => {
                let uncond = g.uncond.for_batch(size)?;
                let both = if g.batching.batched(size, device) {
                    Some(uncond.cat(&cond)?)
                } else {
                    uncond.check_same_fields(&cond)?;
                    None
                };
                (Some(uncond), both, g.scale)
            }
            _ => (None, None, 1.0),
        };
        Ok(Guided {
            cond,
            uncond,
            both,
            scale,
            rescale,
            size: size.to_vec(),
            n: size[0],
            c: size[1],
        })
    }

    /// The (guided) model output for `input` at timesteps `t` (`[N]`),
    /// variance channels included when the model has them.
    pub(crate) fn eval(&self, model: &dyn Denoiser, input: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (n, c) = (self.n, self.c);
        if let Some(both) = &self.both {
            let out = model.forward(
                &Tensor::f_cat(&[input, input], 0)?,
                &Tensor::f_cat(&[t, t], 0)?,
                both,
            )?;
            check_output(&out, 2 * n, c, &self.size)?;
            return guide_rescaled(&out, n, c, self.scale, self.rescale);
        }
        let out = model.forward(input, t, &self.cond)?;
        check_output(&out, n, c, &self.size)?;
        let Some(uncond) = &self.uncond else {
            return Ok(out);
        };
        let out_u = model.forward(input, t, uncond)?;
        check_output(&out_u, n, c, &self.size)?;
        guide_rescaled(
            &Tensor::f_cat(&[out_u, out], 0)?,
            n,
            c,
            self.scale,
            self.rescale,
        )
    }

    /// [`Guided::eval`] without the variance channels.
    pub(crate) fn eval_mean(
        &self,
        model: &dyn Denoiser,
        input: &Tensor,
        t: &Tensor,
    ) -> Result<Tensor> {
        let out = self.eval(model, input, t)?;
        Ok(if out.size()[1] == 2 * self.c {
            out.narrow(1, 0, self.c)
        } else {
            out
        })
    }
}

/// The model output must be `[n, C or 2C, ..]` with the sample's spatial size.
fn check_output(out: &Tensor, n: i64, c: i64, sample: &[i64]) -> Result<()> {
    let s = out.size();
    let ok = s.len() == sample.len()
        && s[0] == n
        && (s[1] == c || s[1] == 2 * c)
        && s[2..] == sample[2..];
    if ok {
        Ok(())
    } else {
        Err(Error::Shape(format!(
            "the model returned shape {s:?} for samples of shape {sample:?}: expected [{n}, {c} or {}, ..]",
            2 * c
        )))
    }
}

/// uncond + s (cond - uncond) on the first `c` channels of a `[2n, ..]`
/// output whose first half is unconditional; extra (variance) channels come
/// from the conditional half.
pub fn guide(out: &Tensor, n: i64, c: i64, scale: f64) -> Result<Tensor> {
    let uncond = out.f_narrow(0, 0, n)?;
    let cond = out.f_narrow(0, n, n)?;
    let eps_u = uncond.f_narrow(1, 0, c)?;
    let eps_c = cond.f_narrow(1, 0, c)?;
    let guided = &eps_u + (&eps_c - &eps_u) * scale;
    let channels = out.size()[1];
    Ok(if channels > c {
        Tensor::cat(&[guided, cond.f_narrow(1, c, channels - c)?], 1)
    } else {
        guided
    })
}

/// [`guide`], then diffusers' `rescale_noise_cfg` with `phi` (see
/// [`Guidance::rescale`]) on the first `c` channels: the guided output
/// times std(cond) / std(guided), per sample (unbiased std over all but the
/// batch dimension), mixed phi : 1 - phi with the guided output.
pub fn guide_rescaled(out: &Tensor, n: i64, c: i64, scale: f64, phi: f64) -> Result<Tensor> {
    let guided = guide(out, n, c, scale)?;
    if phi == 0.0 {
        return Ok(guided);
    }
    let dims: Vec<i64> = (1..out.dim() as i64).collect();
    let std = |t: &Tensor| t.f_std_dim(dims.as_slice(), true, true);
    let eps = guided.f_narrow(1, 0, c)?;
    let cond = out.f_narrow(0, n, n)?.f_narrow(1, 0, c)?;
    let rescaled = &eps * (std(&cond)? / std(&eps)?);
    let mixed = rescaled * phi + &eps * (1.0 - phi);
    let channels = guided.size()[1];
    Ok(if channels > c {
        Tensor::f_cat(&[mixed, guided.f_narrow(1, c, channels - c)?], 1)?
    } else {
        mixed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tch::{Device, Kind};

    /// A text-like model: output = x * mean(encoder_hidden_states) per sample.
    fn text_model(
        calls: &RefCell<Vec<i64>>,
    ) -> impl Fn(&Tensor, &Tensor, &Cond) -> Result<Tensor> + '_ {
        move |x, _t, c| {
            let h = c.encoder_hidden_states.as_ref().expect("text");
            calls.borrow_mut().push(x.size()[0]);
            let w = h.mean_dim([1i64, 2].as_slice(), false, Kind::Float);
            Ok(x * w.reshape([-1, 1, 1, 1]))
        }
    }

    #[test]
    fn text_guidance_batched_equals_sequential_and_repeats_the_negative_prompt() {
        let opts = (Kind::Float, Device::Cpu);
        let x = Tensor::ones([3, 1, 2, 2], opts);
        let t = Tensor::from_slice(&[5i64, 5, 5]);
        let prompt = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).reshape([3, 1, 1]);
        let negative = Tensor::from_slice(&[0.5f32]).reshape([1, 1, 1]);
        let mut outs = Vec::new();
        let mut calls = Vec::new();
        for batching in [Batching::Batched, Batching::Sequential] {
            let log = RefCell::new(Vec::new());
            let mut c = Conditioning::guided(
                Cond::text(prompt.shallow_clone(), None),
                2.0,
                Cond::text(negative.shallow_clone(), None),
            );
            c.guidance.as_mut().unwrap().batching = batching;
            let g = Guided::new(&c, &x.size(), Device::Cpu).unwrap();
            outs.push(g.eval(&text_model(&log), &x, &t).unwrap());
            calls.push(log.into_inner());
        }
        assert_eq!(calls[0], [6]);
        assert_eq!(calls[1], [3, 3]);
        assert!(outs[0].equal(&outs[1]));
        // 0.5 + 2 (p - 0.5)
        let v: Vec<f32> =
            Vec::try_from(outs[0].mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)).unwrap();
        assert_eq!(v, [1.5, 3.5, 5.5]);
    }

    #[test]
    fn auto_batching_batches_small_cpu_batches_and_every_gpu_batch() {
        let cuda = Device::Cuda(0);
        for (size, cpu) in [
            ([4, 1, 32, 32], true),
            ([16, 1, 32, 32], true),
            ([17, 1, 32, 32], false),
            ([64, 3, 64, 64], false),
        ] {
            assert_eq!(Batching::Auto.batched(&size, Device::Cpu), cpu, "{size:?}");
            assert!(Batching::Auto.batched(&size, cuda));
            assert!(Batching::Batched.batched(&size, Device::Cpu));
            assert!(!Batching::Sequential.batched(&size, cuda));
        }
        assert_eq!("sequential".parse::<Batching>(), Ok(Batching::Sequential));
        assert!("both"
            .parse::<Batching>()
            .unwrap_err()
            .contains("auto, batched or sequential"));
        // Auto on a large CPU batch runs the branches one after the other.
        let x = Tensor::ones([20, 1, 32, 32], (Kind::Float, Device::Cpu));
        let t = Tensor::zeros([20], (Kind::Int64, Device::Cpu));
        let c = Conditioning::guided(
            Cond::text(Tensor::ones([1, 1, 1], (Kind::Float, Device::Cpu)), None),
            2.0,
            Cond::text(Tensor::zeros([1, 1, 1], (Kind::Float, Device::Cpu)), None),
        );
        let log = RefCell::new(Vec::new());
        let _ = Guided::new(&c, &x.size(), Device::Cpu)
            .unwrap()
            .eval(&text_model(&log), &x, &t)
            .unwrap();
        assert_eq!(log.into_inner(), [20, 20]);
    }

    #[test]
    fn rescaled_guidance_matches_the_formula() {
        tensor::seed::seed_everything(5);
        let out = Tensor::randn([4, 2, 3, 3], (Kind::Double, Device::Cpu));
        let plain = guide(&out, 2, 2, 7.5).unwrap();
        assert!(guide_rescaled(&out, 2, 2, 7.5, 0.0).unwrap().equal(&plain));
        let got = guide_rescaled(&out, 2, 2, 7.5, 0.7).unwrap();
        for k in 0..2 {
            let cond = out.get(2 + k);
            let g = plain.get(k);
            let ratio = cond.std(true).double_value(&[]) / g.std(true).double_value(&[]);
            let expected = &g * (0.7 * ratio) + &g * 0.3;
            let diff = (got.get(k) - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-12, "sample {k}: {diff}");
        }
        // With phi = 1 the output has the conditional branch's spread.
        let full = guide_rescaled(&out, 2, 2, 7.5, 1.0).unwrap();
        let (a, b) = (
            full.get(0).std(true).double_value(&[]),
            out.get(2).std(true).double_value(&[]),
        );
        assert!((a - b).abs() < 1e-12);
    }

    #[test]
    fn class_conditioning_checks_guidance() {
        let labels = Tensor::from_slice(&[1i64, 2]);
        assert!(Conditioning::class(Some(labels.shallow_clone()), 2.0, None)
            .unwrap_err()
            .to_string()
            .contains("null"));
        assert!(Conditioning::class(None, 2.0, Some(9)).is_err());
        let c = Conditioning::class(Some(labels), 2.0, Some(9)).unwrap();
        let u = c.guidance.unwrap().uncond.class_labels.unwrap();
        assert_eq!(Vec::<i64>::try_from(u).unwrap(), [9, 9]);
        // Mismatched fields between the branches are an error.
        let bad = Conditioning::guided(
            Cond::labels(Tensor::from_slice(&[1i64])),
            3.0,
            Cond::default(),
        );
        assert!(Guided::new(&bad, &[1, 1, 2, 2], Device::Cpu).is_err());
    }
}
