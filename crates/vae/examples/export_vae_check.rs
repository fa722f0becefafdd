//! Writes freshly initialised VAEs, saved by this crate, for diffusers to
//! check: `cargo run -p vae --example export_vae_check -- OUT` writes one model
//! folder per parity-fixture config into OUT, each with `io.safetensors`
//! holding random inputs and our outputs; then
//! `cargo xtask py scripts/gen_vae_fixtures.py --check-ours OUT` loads every
//! folder with `AutoencoderKL.from_pretrained` and compares.

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use vae::{Vae, VaeConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args()
        .nth(1)
        .ok_or("usage: export_check OUT")?
        .into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    tch::manual_seed(0);
    for entry in std::fs::read_dir(&fixtures)? {
        let dir = entry?.path();
        if !dir.join("config.json").is_file() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let config = VaeConfig::from_file(dir.join("config.json"))?;
        let vae = Vae::new(&config, Device::Cpu)?;
        let (h, w) = config.sample_size.hw();
        let f = config.downscale_factor();
        let images =
            Tensor::rand([2, config.in_channels, h, w], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let latents = Tensor::randn(
            [2, config.latent_channels, h / f, w / f],
            (Kind::Float, Device::Cpu),
        );
        let posterior = vae.encode(&images)?;
        let decoded = vae.decode(&latents)?;
        let folder = out.join(&name);
        vae.save(&folder)?;
        tensor::safetensors::save(
            folder.join("io.safetensors"),
            &[
                ("images", &images),
                ("latents", &latents),
                ("mean", &posterior.mean.contiguous()),
                ("logvar", &posterior.logvar.contiguous()),
                ("decoded", &decoded),
            ],
            None,
        )?;
        println!(
            "{name}: {} weights -> {}",
            vae.num_parameters(),
            folder.display()
        );
    }
    Ok(())
}
