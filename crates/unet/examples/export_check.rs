//! Writes freshly initialised models, saved by this crate, for diffusers to
//! check: `cargo run -p unet --example export_check -- OUT` writes one model
//! folder per configuration (the parity fixtures' configs and the presets
//! `tiny` and `small-grey-28`) into OUT, each with `io.safetensors` holding
//! random inputs and our output; then
//! `cargo xtask py scripts/gen_unet_fixtures.py --check-ours OUT` loads every
//! folder with `UNet2DModel.from_pretrained` and compares.

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use unet::{config::ClassEmbedding, UNet, UNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args()
        .nth(1)
        .ok_or("usage: export_check OUT")?
        .into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut configs = vec![
        ("tiny".to_string(), UNetConfig::tiny()),
        ("small-grey-28".to_string(), UNetConfig::small_grey(28)),
    ];
    for entry in std::fs::read_dir(&fixtures)? {
        let dir = entry?.path();
        if dir.join("config.json").is_file() {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            configs.push((name, UNetConfig::from_file(dir.join("config.json"))?));
        }
    }
    for (i, (name, config)) in configs.iter().enumerate() {
        tensor::seed::seed_everything(100 + i as u64);
        let unet = UNet::new(config, Device::Cpu)?;
        let dir = out.join(name);
        unet.save(&dir)?;
        let n = 2;
        let (h, w) = config.sample_hw().unwrap_or((16, 16));
        let opts = (Kind::Float, Device::Cpu);
        let sample = Tensor::randn([n, config.in_channels, h, w], opts);
        let timesteps = if config.time_embedding_type == "fourier" {
            Tensor::from_slice(&[0.05f32, 20.0])
        } else {
            Tensor::from_slice(&[7i64, 900])
        };
        let labels = match config.class_embedding()? {
            None => None,
            Some(ClassEmbedding::Table(_)) => Some(Tensor::from_slice(&[1i64, 3])),
            Some(ClassEmbedding::Timestep) => Some(Tensor::from_slice(&[4.0f32, 8.0])),
            Some(ClassEmbedding::Identity) => {
                Some(Tensor::randn([n, config.time_embed_dim()], opts))
            }
        };
        let output = tch::no_grad(|| unet.forward(&sample, &timesteps, labels.as_ref()))?;
        let mut tensors = vec![
            ("sample", &sample),
            ("timesteps", &timesteps),
            ("output", &output),
        ];
        if let Some(l) = &labels {
            tensors.push(("class_labels", l));
        }
        tensor::safetensors::save(dir.join("io.safetensors"), &tensors, None)?;
        println!("{}: {} weights", dir.display(), unet.num_parameters());
    }
    Ok(())
}
