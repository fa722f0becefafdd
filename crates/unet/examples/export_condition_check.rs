//! Writes freshly initialised `UNet2DConditionModel`s, saved by this crate,
//! for diffusers to check: `cargo run -p unet --example
//! export_condition_check -- OUT` writes one model folder per parity
//! fixture config into OUT, each with `io.safetensors` holding random
//! inputs and our output; then `cargo xtask py
//! scripts/gen_unet_condition_fixtures.py --check-ours OUT` loads every
//! folder with `UNet2DConditionModel.from_pretrained` and compares.

use std::path::PathBuf;

use tch::{Device, Kind, Tensor};
use unet::unet_2d_condition::Conditioning;
use unet::{ConditionUNet, UNetConditionConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args()
        .nth(1)
        .ok_or("usage: export_condition_check OUT")?
        .into();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/condition");
    let mut names: Vec<_> = std::fs::read_dir(&fixtures)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.join("config.json").is_file())
        .collect();
    names.sort();
    for (i, dir) in names.iter().enumerate() {
        let config = UNetConditionConfig::from_file(dir.join("config.json"))?;
        tensor::seed::seed_everything(200 + i as u64);
        let unet = ConditionUNet::new(&config, Device::Cpu)?;
        let target = out.join(dir.file_name().unwrap());
        unet.save(&target)?;
        let n = 2;
        let (h, w) = config.sample_hw().unwrap_or((8, 8));
        let opts = (Kind::Float, Device::Cpu);
        let sample = Tensor::randn([n, config.in_channels, h + 1, w], opts);
        let timesteps = Tensor::from_slice(&[7i64, 900]);
        let states = Tensor::randn([n, 6, config.encoder_width()], opts);
        let mask = Tensor::from_slice(&[
            1.0f32, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        ])
        .reshape([n, 6]);
        let labels = config
            .num_class_embeds
            .map(|k| Tensor::from_slice(&[0i64, k - 1]));
        let cond = Conditioning {
            encoder_hidden_states: &states,
            encoder_attention_mask: Some(&mask),
            class_labels: labels.as_ref(),
        };
        let output = tch::no_grad(|| unet.forward(&sample, &timesteps, cond))?;
        let mut tensors = vec![
            ("sample", &sample),
            ("timesteps", &timesteps),
            ("encoder_hidden_states", &states),
            ("encoder_attention_mask", &mask),
            ("output", &output),
        ];
        if let Some(l) = &labels {
            tensors.push(("class_labels", l));
        }
        tensor::safetensors::save(target.join("io.safetensors"), &tensors, None)?;
        println!("{}: {} weights", target.display(), unet.num_parameters());
    }
    Ok(())
}
