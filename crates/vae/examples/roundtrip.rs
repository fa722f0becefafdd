//! Encodes an image to latents and decodes it back:
//!
//! ```text
//! cargo run -p vae --example roundtrip -- VAE_OR_PIPELINE_DIR in.png out.png [--tiled]
//! ```
//!
//! VAE_OR_PIPELINE_DIR is a diffusers `vae/` folder or a pipeline folder
//! holding one (Stable Diffusion's, for example). The image is cropped to
//! a multiple of the VAE's downscale factor; the scaled latents (what the
//! diffusion model sees) and their statistics are reported, and the decoded
//! image is written to out.png. With `--tiled`, large images are encoded and
//! decoded tile by tile.

use std::path::PathBuf;

use tch::{Device, Kind};
use vae::{LatentDraw, Vae};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tiled = args.iter().any(|a| a == "--tiled");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [model, input, output] = paths.as_slice() else {
        return Err("usage: roundtrip VAE_OR_PIPELINE_DIR in.png out.png [--tiled]".into());
    };
    let device = Device::cuda_if_available();
    let mut vae = Vae::load(PathBuf::from(model.as_str()), device)?;
    if tiled {
        vae.enable_tiling();
    }

    // [C, H, W] in [-1, 1], cropped to a multiple of the downscale factor.
    let image = tensor::image::load_image(input.as_str())?;
    let f = vae.config().downscale_factor();
    let (h, w) = (image.size()[1] / f * f, image.size()[2] / f * f);
    let image = image.narrow(1, 0, h).narrow(2, 0, w);
    let channels = vae.config().in_channels;
    let image = match image.size()[0] {
        c if c == channels => image,
        1 => image.expand([channels, h, w], false),
        c => image.narrow(0, 0, channels.min(c)),
    };
    let batch = image.unsqueeze(0).to_device(device);

    let latents = vae.encode_latents(&batch, LatentDraw::Mode)?;
    println!(
        "{}x{} image -> latents {:?}: mean {:.4}, std {:.4}",
        w,
        h,
        latents.size(),
        latents.mean(Kind::Float).double_value(&[]),
        latents.std(true).double_value(&[]),
    );
    let decoded = vae
        .decode_latents(&latents)?
        .squeeze_dim(0)
        .to_device(Device::Cpu);
    let mse = (&decoded.clamp(-1.0, 1.0) - image.to_device(Device::Cpu))
        .square()
        .mean(Kind::Float)
        .double_value(&[]);
    // On [0, 1] pixel values the error is a quarter of that on [-1, 1].
    println!(
        "reconstruction PSNR {:.2} dB",
        10.0 * (1.0 / (mse / 4.0)).log10()
    );
    let decoded = if decoded.size()[0] == 3 || decoded.size()[0] == 1 {
        decoded
    } else {
        decoded.narrow(0, 0, 1)
    };
    tensor::image::save_image(output.as_str(), &decoded, tensor::image::BitDepth::Eight)?;
    println!("wrote {output}");
    Ok(())
}
