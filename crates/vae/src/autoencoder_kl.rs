//! diffusers' `AutoencoderKL`: the [`Encoder`], a 1x1 `quant_conv` on its
//! moments, the posterior [`DiagonalGaussianDistribution`], a 1x1
//! `post_quant_conv` on the latents and the [`Decoder`].
//!
//! With tiling on ([`AutoencoderKL::enable_tiling`]), inputs larger than a
//! tile are encoded or decoded tile by tile, the tiles overlapping by a
//! quarter and blended linearly where they overlap, exactly as diffusers'
//! `enable_tiling()` does: memory stays bounded whatever the image size, at
//! the price of small differences from the untiled result.

use tch::{nn, nn::Module, Tensor};
use unet::layers;

use crate::vae::{Decoder, DiagonalGaussianDistribution, Encoder};
use crate::{Error, Result, VaeConfig};

/// Tile sizes of tiled encoding and decoding (diffusers' `tile_sample_min_size`,
/// `tile_latent_min_size`, `tile_overlap_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Side of an image tile, in pixels.
    pub sample_size: i64,
    /// Side of a latent tile.
    pub latent_size: i64,
    /// Fraction of a tile shared with its neighbour.
    pub overlap_factor: f64,
}

impl Tiling {
    /// diffusers' tiles for a config: `sample_size` (its height when
    /// rectangular) pixels, `sample_size / 2^(levels - 1)` latents, a
    /// quarter of overlap.
    pub fn for_config(cfg: &VaeConfig) -> Self {
        let sample = cfg.sample_size.hw().0;
        Tiling {
            sample_size: sample,
            latent_size: (sample as f64 / cfg.downscale_factor() as f64) as i64,
            overlap_factor: 0.25,
        }
    }
}

/// The VAE: images to latent posteriors and latents to images.
#[derive(Debug)]
pub struct AutoencoderKL {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<nn::Conv2D>,
    pub post_quant_conv: Option<nn::Conv2D>,
    pub config: VaeConfig,
    /// Tiled encoding and decoding of inputs larger than a tile; off by default.
    pub tiling: Option<Tiling>,
}

impl AutoencoderKL {
    /// Builds the model under `vs` (variables named as diffusers' state-dict
    /// keys), after [`VaeConfig::validate`].
    pub fn new(vs: nn::Path<'_>, config: &VaeConfig) -> Result<Self> {
        config.validate()?;
        let z = config.latent_channels;
        Ok(AutoencoderKL {
            encoder: Encoder::new(&vs / "encoder", config)?,
            decoder: Decoder::new(&vs / "decoder", config)?,
            quant_conv: config
                .use_quant_conv
                .then(|| layers::conv2d(&vs / "quant_conv", 2 * z, 2 * z, 1, 1, 0)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| layers::conv2d(&vs / "post_quant_conv", z, z, 1, 1, 0)),
            config: config.clone(),
            tiling: None,
        })
    }

    /// Turns on tiled encoding and decoding with diffusers' tile sizes.
    pub fn enable_tiling(&mut self) {
        self.tiling = Some(Tiling::for_config(&self.config));
    }

    /// Turns tiling off.
    pub fn disable_tiling(&mut self) {
        self.tiling = None;
    }

    fn check_input(&self, x: &Tensor, channels: i64, what: &str) -> Result<(i64, i64)> {
        let size = x.size();
        if size.len() != 4 || size[1] != channels {
            return Err(Error::Input(format!(
                "{what} must be [N, {channels}, H, W], got {size:?}"
            )));
        }
        if !x.is_floating_point() {
            return Err(Error::Input(format!(
                "{what} must be a floating-point tensor, got {:?}",
                x.kind()
            )));
        }
        Ok((size[2], size[3]))
    }

    /// The posterior of images `x` (`[N, in_channels, H, W]` in [-1, 1], H
    /// and W multiples of [`VaeConfig::downscale_factor`]).
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        self.encode_t(x, false)
    }

    /// [`AutoencoderKL::encode`] in training or evaluation mode (the VAE
    /// has no dropout; the flag is passed through for symmetry with the
    /// other models).
    pub fn encode_t(&self, x: &Tensor, train: bool) -> Result<DiagonalGaussianDistribution> {
        let (h, w) = self.check_input(x, self.config.in_channels, "images")?;
        self.config.check_image_hw(h, w)?;
        let moments = match self.tiling {
            Some(t) if h > t.sample_size || w > t.sample_size => self.tiled_moments(x, &t, train),
            _ => self.moments(x, train),
        };
        DiagonalGaussianDistribution::new(&moments)
    }

    fn moments(&self, x: &Tensor, train: bool) -> Tensor {
        let h = self.encoder.forward_t(x, train);
        match &self.quant_conv {
            Some(q) => q.forward(&h),
            None => h,
        }
    }

    /// Images `[N, out_channels, h * f, w * f]` of latents `z`
    /// (`[N, latent_channels, h, w]`, unscaled: see
    /// [`crate::Vae::decode_latents`] for the diffusion model's scaled latents).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_t(z, false)
    }

    /// [`AutoencoderKL::decode`] in training or evaluation mode.
    pub fn decode_t(&self, z: &Tensor, train: bool) -> Result<Tensor> {
        let (h, w) = self.check_input(z, self.config.latent_channels, "latents")?;
        Ok(match self.tiling {
            Some(t) if h > t.latent_size || w > t.latent_size => self.tiled_decode(z, &t, train),
            _ => self.decode_tile(z, train),
        })
    }

    fn decode_tile(&self, z: &Tensor, train: bool) -> Tensor {
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(z),
            None => z.shallow_clone(),
        };
        self.decoder.forward_t(&z, train)
    }

    /// Encoder moments tile by tile (diffusers' `_tiled_encode`).
    fn tiled_moments(&self, x: &Tensor, t: &Tiling, train: bool) -> Tensor {
        let overlap = (t.sample_size as f64 * (1.0 - t.overlap_factor)) as i64;
        let blend = (t.latent_size as f64 * t.overlap_factor) as i64;
        tiled(
            x,
            t.sample_size,
            overlap,
            blend,
            t.latent_size - blend,
            |tile| self.moments(tile, train),
        )
    }

    /// Decoding tile by tile (diffusers' `tiled_decode`).
    fn tiled_decode(&self, z: &Tensor, t: &Tiling, train: bool) -> Tensor {
        let overlap = (t.latent_size as f64 * (1.0 - t.overlap_factor)) as i64;
        let blend = (t.sample_size as f64 * t.overlap_factor) as i64;
        tiled(
            z,
            t.latent_size,
            overlap,
            blend,
            t.sample_size - blend,
            |tile| self.decode_tile(tile, train),
        )
    }
}

/// Runs `f` on `tile x tile` windows of `x` every `stride` rows and columns,
/// blends each output with the one above and the one to the left over
/// `blend` rows/columns, crops each to `keep x keep` and stitches them.
fn tiled(
    x: &Tensor,
    tile: i64,
    stride: i64,
    blend: i64,
    keep: i64,
    f: impl Fn(&Tensor) -> Tensor,
) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let starts = |len: i64| {
        (0..len)
            .step_by(stride.max(1) as usize)
            .collect::<Vec<i64>>()
    };
    let (rows, cols) = (starts(h), starts(w));
    let mut blended: Vec<Vec<Tensor>> = Vec::with_capacity(rows.len());
    for (i, &y) in rows.iter().enumerate() {
        let mut row: Vec<Tensor> = Vec::with_capacity(cols.len());
        for (j, &x0) in cols.iter().enumerate() {
            let window = x
                .narrow(2, y, tile.min(h - y))
                .narrow(3, x0, tile.min(w - x0));
            let mut out = f(&window);
            if i > 0 {
                out = blend_along(&blended[i - 1][j], &out, blend, 2);
            }
            if j > 0 {
                out = blend_along(&row[j - 1], &out, blend, 3);
            }
            row.push(out);
        }
        blended.push(row);
    }
    let stitched: Vec<Tensor> = blended
        .iter()
        .map(|row| {
            let cropped: Vec<Tensor> = row
                .iter()
                .map(|t| {
                    t.narrow(2, 0, keep.min(t.size()[2]))
                        .narrow(3, 0, keep.min(t.size()[3]))
                })
                .collect();
            Tensor::cat(&cropped, 3)
        })
        .collect();
    Tensor::cat(&stitched, 2)
}

/// `b` with its first `extent` rows (`dim` 2) or columns (`dim` 3) faded in
/// from the last ones of `a`: `a[-extent + k] (1 - k / extent) + b[k] k / extent`
/// (diffusers' `blend_v` / `blend_h`).
fn blend_along(a: &Tensor, b: &Tensor, extent: i64, dim: i64) -> Tensor {
    let extent = extent
        .min(a.size()[dim as usize])
        .min(b.size()[dim as usize]);
    if extent <= 0 {
        return b.shallow_clone();
    }
    let mut shape = vec![1i64; 4];
    shape[dim as usize] = extent;
    let opts = (b.kind(), b.device());
    let w_b: Vec<f64> = (0..extent).map(|k| k as f64 / extent as f64).collect();
    let w_a: Vec<f64> = w_b.iter().map(|w| 1.0 - w).collect();
    let w_b = Tensor::from_slice(&w_b)
        .to_kind(opts.0)
        .to_device(opts.1)
        .view(shape.as_slice());
    let w_a = Tensor::from_slice(&w_a)
        .to_kind(opts.0)
        .to_device(opts.1)
        .view(shape.as_slice());
    let a_len = a.size()[dim as usize];
    let head = a.narrow(dim, a_len - extent, extent) * w_a + b.narrow(dim, 0, extent) * w_b;
    let rest = b.narrow(dim, extent, b.size()[dim as usize] - extent);
    Tensor::cat(&[head, rest], dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn blending_fades_linearly_over_the_overlap() {
        let a = Tensor::ones([1, 1, 4, 2], (Kind::Float, Device::Cpu));
        let b = Tensor::zeros([1, 1, 3, 2], (Kind::Float, Device::Cpu));
        let out = blend_along(&a, &b, 4, 2);
        let col: Vec<f32> = Vec::try_from(out.select(3, 0).flatten(0, -1)).unwrap();
        assert_eq!(col, [1.0, 2.0 / 3.0, 1.0 / 3.0]);
        let b = Tensor::zeros([1, 1, 4, 3], (Kind::Float, Device::Cpu));
        let out = blend_along(&a, &b, 2, 3);
        let row: Vec<f32> = Vec::try_from(out.select(2, 0).flatten(0, -1)).unwrap();
        assert_eq!(row, [1.0, 0.5, 0.0]);
    }

    #[test]
    fn tiling_without_overlap_is_the_plain_map() {
        let x = Tensor::randn([1, 2, 8, 12], (Kind::Float, Device::Cpu));
        let out = tiled(&x, 4, 4, 0, 4, |t| t * 2.0);
        assert!(out.allclose(&(&x * 2.0), 0.0, 0.0, false));
    }

    #[test]
    fn tiles_follow_the_config() {
        let cfg = VaeConfig::stable_diffusion();
        let t = Tiling::for_config(&cfg);
        assert_eq!((t.sample_size, t.latent_size), (512, 64));
    }
}
