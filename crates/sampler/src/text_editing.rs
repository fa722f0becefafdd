//! Text-guided editing with a Stable-Diffusion-style pipeline, in the VAE's
//! latent space, as diffusers' `StableDiffusionImg2ImgPipeline` and
//! `StableDiffusionInpaintPipeline` do it.
//!
//! **Image to image** (SDEdit on latents): each input image is encoded to a
//! draw from the VAE's posterior, scaled as the U-Net's latents, noised to
//! the position that `strength` selects (see [`crate::edit::start_position`])
//! and denoised from there with the prompt's guidance:
//!
//! ```text
//! z0 = scaling_factor * (mean + std * e)           // VAE posterior draw, e ~ N(0, I)
//! x  = add_noise(z0, noise, start)                 // also at strength 1, as diffusers
//! x  = reverse process from `start`, guided by the prompt
//! image = vae.decode(x / scaling_factor)
//! ```
//!
//! **Inpainting**: the mask (white = repaint) is binarised at 0.5 and
//! shrunk to the latent grid (nearest neighbour). The start is the scaled
//! noise at strength 1 and `add_noise(z0, noise, start)` below it. Then:
//!
//! - a plain 4-channel U-Net is steered by blending: after the step at
//!   position `i` the known region is put back, noised to the next position,
//!   `x = (1 - m) * add_noise(z0, noise, i + 1) + m * x` (the clean `z0`
//!   after the last step), so the unmasked latents end exactly as the
//!   image's;
//! - a 9-channel inpainting U-Net (`stable-diffusion-inpainting`) sees the
//!   mask and the latents of the image with the masked region blacked out
//!   beside `x`, `cat(x, m, masked_z0)`, and is not blended.
//!
//! The random draws come in diffusers' order from libtorch's CPU generator
//! (see [`EditNoise`]), so a seed here gives the images that
//! `generator=torch.Generator().manual_seed(seed)` gives there.

use std::path::Path;

use image::imageops::FilterType;
use tch::{Device, Kind, Tensor};

use crate::denoiser::Denoiser;
use crate::edit::start_position;
use crate::guidance::{Conditioning, Guidance};
use crate::noise::NoiseSource;
use crate::sample::{sample_from_with, StepInfo};
use crate::solver::{add_noise, Solver};
use crate::text_to_image::TextToImage;
use crate::{Error, Result};

/// The standard-normal draws of a latent edit.
#[derive(Debug)]
pub struct EditNoise {
    /// The VAE posterior draw of the input images (`[n, 4, h, w]`), when the
    /// edit encodes them.
    pub image: Option<Tensor>,
    /// The noise of the forward process (`[batch, 4, h, w]`).
    pub noise: Tensor,
    /// The posterior draw of the masked images (inpainting; diffusers draws
    /// it for 4-channel U-Nets too, which do not use it).
    pub masked_image: Option<Tensor>,
}

impl EditNoise {
    /// Image to image: the posterior draw of `images` inputs, then the noise
    /// of `batch` latents of `[c, h, w]`, from libtorch's CPU generator.
    pub fn img2img(images: i64, batch: i64, latent: [i64; 3]) -> Self {
        let [c, h, w] = latent;
        let opts = (Kind::Float, Device::Cpu);
        let image = Tensor::randn([images, c, h, w], opts);
        let noise = Tensor::randn([batch, c, h, w], opts);
        EditNoise {
            image: Some(image),
            noise,
            masked_image: None,
        }
    }

    /// Inpainting: the images' posterior draw (only when `encode_image`: a
    /// 4-channel U-Net or strength below 1), the noise, then the masked
    /// images' draw, from libtorch's CPU generator.
    pub fn inpaint(images: i64, batch: i64, latent: [i64; 3], encode_image: bool) -> Self {
        let [c, h, w] = latent;
        let opts = (Kind::Float, Device::Cpu);
        let image = encode_image.then(|| Tensor::randn([images, c, h, w], opts));
        let noise = Tensor::randn([batch, c, h, w], opts);
        let masked_image = Some(Tensor::randn([images, c, h, w], opts));
        EditNoise {
            image,
            noise,
            masked_image,
        }
    }
}

/// The inputs of a latent inpainting run, at latent size and batch size.
#[derive(Debug)]
pub struct InpaintLatents {
    /// The images' scaled latents (4-channel U-Nets and strength < 1).
    pub image_latents: Option<Tensor>,
    /// `[batch, 1, h, w]`: 1 where the latents are repainted.
    pub mask: Tensor,
    /// The scaled latents of the images with the repainted region black
    /// (9-channel U-Nets).
    pub masked_image_latents: Option<Tensor>,
}

/// Whether a U-Net of `in_channels` inpaints by blending (4, the latent
/// channels) or by its extra inputs (9 = latents + mask + masked latents);
/// errors for any other count.
pub fn inpaint_by_channels(in_channels: i64, latent_channels: i64) -> Result<bool> {
    if in_channels == latent_channels {
        Ok(false)
    } else if in_channels == 2 * latent_channels + 1 {
        Ok(true)
    } else {
        Err(Error::Unsupported(format!(
            "a U-Net with in_channels = {in_channels}: inpainting takes {latent_channels} \
             (blending) or {} (an inpainting U-Net: latents, mask, masked-image latents)",
            2 * latent_channels + 1
        )))
    }
}

/// Repeats a batch of `n` along dim 0 to `batch` (`batch` a multiple of
/// `n`), as diffusers duplicates images over prompts: `[a, b]` -> `[a, b, a, b]`.
pub fn tile_batch(t: &Tensor, batch: i64, what: &str) -> Result<Tensor> {
    let n = t.size()[0];
    if n == batch {
        return Ok(t.shallow_clone());
    }
    if n == 0 || batch % n != 0 {
        return Err(Error::Shape(format!(
            "{n} {what} for {batch} images: the number of images (prompts x images per \
             prompt) must be a multiple of the number of {what}"
        )));
    }
    let mut reps = vec![1i64; t.dim()];
    reps[0] = batch / n;
    Ok(t.f_repeat(&reps)?)
}

/// A mask `[n, 1, H, W]` in {0, 1} shrunk to the latent grid `(h, w)`
/// (nearest neighbour, as `torch.nn.functional.interpolate`'s default).
pub fn latent_mask(mask: &Tensor, h: i64, w: i64) -> Result<Tensor> {
    Ok(mask.f_upsample_nearest2d([h, w], None, None)?)
}

impl TextToImage {
    /// diffusers' `_encode_vae_image`: the scaled latents of `images`
    /// (`[n, 3, H, W]` in [-1, 1]) drawn from the VAE posterior with the
    /// standard-normal `draw` (`[n, 4, H/8, W/8]`).
    pub fn encode_images(&self, images: &Tensor, draw: &Tensor) -> Result<Tensor> {
        let vae = self.latent_vae()?;
        let posterior = vae.encode(images)?;
        let z = posterior.sample_with(&draw.f_to_device(posterior.mean.device())?)?;
        Ok(vae.scale_latents(&z)?)
    }

    /// Image to image: final latents of `images` (`[n, 3, H, W]` in
    /// [-1, 1], tiled to the batch of `conditioning`) edited by `strength`
    /// with `solver` (see the module docs). Strength 0 returns the images'
    /// latents unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn img2img(
        &self,
        model: &dyn Denoiser,
        solver: &mut dyn Solver,
        conditioning: &Conditioning,
        images: &Tensor,
        strength: f64,
        draws: &EditNoise,
        rng: &mut dyn NoiseSource,
        progress: &mut dyn FnMut(&StepInfo<'_>),
    ) -> Result<Tensor> {
        let start = start_position(solver, strength)?;
        if inpaint_by_channels(
            self.unet.config().in_channels,
            self.latent_vae()?.config().latent_channels,
        )? {
            return Err(Error::Unsupported(
                "an inpainting U-Net (9 input channels) edits with a mask: use inpainting".into(),
            ));
        }
        let device = self.text_encoder.device();
        let image_draw = draws.image.as_ref().ok_or_else(|| {
            Error::Shape("image to image needs the images' posterior draw".into())
        })?;
        let noise = draws.noise.f_to_device(device)?;
        let batch = noise.size()[0];
        let z0 = self.encode_images(&images.f_to_device(device)?, image_draw)?;
        let z0 = tile_batch(&z0, batch, "input images")?;
        if start == solver.timesteps().len() {
            return Ok(z0);
        }
        let x = add_noise(solver, &z0, &noise, start)?;
        sample_from_with(
            model,
            solver,
            &x,
            start,
            conditioning,
            rng,
            progress,
            &mut |_, x| Ok(x),
        )
    }

    /// The latent inputs of inpainting `images` (`[n, 3, H, W]` in [-1, 1])
    /// where `masks` (`[1 or n, 1, H, W]`, 1 = repaint) say, for a batch of
    /// `batch`: the image latents when `draws` has their posterior draw, the
    /// latent mask, and for 9-channel U-Nets the masked images' latents.
    pub fn inpaint_latents(
        &self,
        images: &Tensor,
        masks: &Tensor,
        batch: i64,
        draws: &EditNoise,
    ) -> Result<InpaintLatents> {
        let device = self.text_encoder.device();
        let images = images.f_to_device(device)?.f_to_kind(Kind::Float)?;
        let masks = masks.f_to_device(device)?.f_to_kind(Kind::Float)?;
        let cfg = self.unet.config();
        let by_channels =
            inpaint_by_channels(cfg.in_channels, self.latent_vae()?.config().latent_channels)?;
        let image_latents = match &draws.image {
            Some(draw) => Some(tile_batch(
                &self.encode_images(&images, draw)?,
                batch,
                "input images",
            )?),
            None => None,
        };
        let [_, _, h, w] = images.size()[..] else {
            return Err(Error::Shape(format!(
                "images of shape {:?}: expected [N, 3, H, W]",
                images.size()
            )));
        };
        let f = self.vae_scale_factor();
        let mask = tile_batch(&latent_mask(&masks, h / f, w / f)?, batch, "masks")?;
        let masked_image_latents = if by_channels {
            let draw = draws.masked_image.as_ref().ok_or_else(|| {
                Error::Shape("an inpainting U-Net needs the masked images' posterior draw".into())
            })?;
            let keep = masks.f_lt(0.5)?.f_to_kind(Kind::Float)?;
            let masked = images.f_mul(&keep)?;
            Some(tile_batch(
                &self.encode_images(&masked, draw)?,
                batch,
                "input images",
            )?)
        } else {
            None
        };
        Ok(InpaintLatents {
            image_latents,
            mask,
            masked_image_latents,
        })
    }

    /// Inpainting: final latents where the masked region is redrawn by the
    /// prompt and the rest kept (see the module docs); `inputs` from
    /// [`TextToImage::inpaint_latents`].
    #[allow(clippy::too_many_arguments)]
    pub fn inpaint(
        &self,
        model: &dyn Denoiser,
        solver: &mut dyn Solver,
        conditioning: &Conditioning,
        inputs: &InpaintLatents,
        strength: f64,
        noise: &Tensor,
        rng: &mut dyn NoiseSource,
        progress: &mut dyn FnMut(&StepInfo<'_>),
    ) -> Result<Tensor> {
        let start = start_position(solver, strength)?;
        let len = solver.timesteps().len();
        let noise = noise.f_to_device(self.text_encoder.device())?;
        let need_image = || {
            inputs.image_latents.as_ref().ok_or_else(|| {
                Error::Shape("inpainting below strength 1 needs the images' latents".into())
            })
        };
        let x = if start == 0 {
            &noise * solver.init_noise_sigma()
        } else if start == len {
            return Ok(need_image()?.shallow_clone());
        } else {
            add_noise(solver, need_image()?, &noise, start)?
        };
        match &inputs.masked_image_latents {
            Some(masked) => {
                // The inpainting U-Net sees [x, mask, masked latents], in
                // both branches of guidance.
                let extra = Tensor::f_cat(&[&inputs.mask, masked], 1)?;
                let conditioning = Conditioning {
                    cond: (conditioning.cond.shallow_clone())
                        .with_extra_channels(extra.shallow_clone()),
                    guidance: conditioning.guidance.as_ref().map(|g| Guidance {
                        scale: g.scale,
                        uncond: g
                            .uncond
                            .shallow_clone()
                            .with_extra_channels(extra.shallow_clone()),
                        batching: g.batching,
                        rescale: g.rescale,
                    }),
                };
                sample_from_with(
                    model,
                    solver,
                    &x,
                    start,
                    &conditioning,
                    rng,
                    progress,
                    &mut |_, x| Ok(x),
                )
            }
            None => {
                let z0 = need_image()?;
                let coefficients: Vec<(f64, f64)> =
                    (0..len).map(|i| solver.noise_coefficients(i)).collect();
                let keep = inputs.mask.ones_like() - &inputs.mask;
                let mut blend = |i: usize, x: Tensor| -> Result<Tensor> {
                    let known = match coefficients.get(i + 1) {
                        Some(&(a, s)) => z0.f_mul_scalar(a)?.f_add(&noise.f_mul_scalar(s)?)?,
                        None => z0.shallow_clone(),
                    };
                    Ok(known.f_mul(&keep)?.f_add(&x.f_mul(&inputs.mask)?)?)
                };
                sample_from_with(
                    model,
                    solver,
                    &x,
                    start,
                    conditioning,
                    rng,
                    progress,
                    &mut blend,
                )
            }
        }
    }
}

/// Loads RGB images for a pipeline as `[n, 3, H, W]` in [-1, 1]: each
/// resized (Lanczos) to `size` (`(height, width)`), or when `None` to the
/// first image's size rounded down to a multiple of `factor` (as diffusers'
/// image processor does). Every image must then have that size.
pub fn load_rgb_images(
    paths: &[impl AsRef<Path>],
    size: Option<(i64, i64)>,
    factor: i64,
) -> Result<Tensor> {
    let mut out = Vec::with_capacity(paths.len());
    let mut target = size;
    for path in paths {
        let path = path.as_ref();
        let img = tensor::image::decode(path)?.to_rgb8();
        let (h, w) = *target.get_or_insert_with(|| {
            (
                i64::from(img.height()) / factor * factor,
                i64::from(img.width()) / factor * factor,
            )
        });
        out.push(resized(
            path,
            image::DynamicImage::ImageRgb8(img),
            h,
            w,
            factor,
        )?);
    }
    if out.is_empty() {
        return Err(Error::Shape("no input image given".into()));
    }
    Ok(Tensor::f_stack(&out, 0)?)
}

/// Loads a mask as `[1, 1, H, W]` in {0, 1}: grey, resized (Lanczos) to
/// `(height, width)`, then 1 where at least half white (diffusers'
/// `do_binarize`).
pub fn load_mask(path: &Path, height: i64, width: i64, factor: i64) -> Result<Tensor> {
    let img = tensor::image::decode(path)?.to_luma8();
    let grey = resized(
        path,
        image::DynamicImage::ImageLuma8(img),
        height,
        width,
        factor,
    )?;
    Ok(grey.f_ge(0.0)?.f_to_kind(Kind::Float)?.unsqueeze(0))
}

/// `img` resized to `h x w` as `[C, H, W]` in [-1, 1]; errors (naming the
/// file) unless both are positive multiples of `factor`.
fn resized(path: &Path, img: image::DynamicImage, h: i64, w: i64, factor: i64) -> Result<Tensor> {
    if h <= 0 || w <= 0 || h % factor != 0 || w % factor != 0 {
        return Err(Error::Input {
            path: path.to_path_buf(),
            reason: format!(
                "is {}x{} pixels: a pipeline takes images whose sides are positive multiples \
                 of {factor} (the VAE's factor; got {w}x{h} after rounding down)",
                img.width(),
                img.height()
            ),
        });
    }
    let img = if (i64::from(img.height()), i64::from(img.width())) == (h, w) {
        img
    } else {
        tracing::info!(path = %path.display(), "resizing {}x{} to {w}x{h}", img.width(), img.height());
        img.resize_exact(w as u32, h as u32, FilterType::Lanczos3)
    };
    Ok(tensor::image::image_to_tensor(&img))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_tile_as_diffusers_duplicates_images() {
        let t = Tensor::from_slice(&[1.0f32, 2.0]).view([2, 1, 1, 1]);
        let tiled = tile_batch(&t, 4, "input images").unwrap();
        assert_eq!(
            Vec::<f32>::try_from(tiled.flatten(0, -1)).unwrap(),
            vec![1.0, 2.0, 1.0, 2.0]
        );
        let e = tile_batch(&t, 3, "input images").unwrap_err().to_string();
        assert!(e.contains("2 input images for 3 images"), "{e}");
    }

    #[test]
    fn masks_shrink_by_nearest_neighbour() {
        // 16 x 16, the right half white: each latent cell takes its top-left pixel.
        let m = Tensor::zeros([1, 1, 16, 16], (Kind::Float, Device::Cpu));
        let _ = m.narrow(3, 8, 8).fill_(1.0);
        let small = latent_mask(&m, 2, 2).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(small.flatten(0, -1)).unwrap(),
            vec![0.0, 1.0, 0.0, 1.0]
        );
    }

    #[test]
    fn inpainting_u_nets_are_told_by_their_channels() {
        assert!(!inpaint_by_channels(4, 4).unwrap());
        assert!(inpaint_by_channels(9, 4).unwrap());
        let e = inpaint_by_channels(5, 4).unwrap_err().to_string();
        assert!(e.contains("in_channels = 5") && e.contains("or 9"), "{e}");
    }
}
