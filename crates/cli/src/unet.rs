//! `lmzh unet`: look at a U-Net. `lmzh unet info DIR` (a diffusers
//! `UNet2DModel` folder or a pipeline folder) or `lmzh unet info --preset
//! NAME` prints the parameter count per block and in total, and the forward
//! FLOPs at the model's sample size.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use tensor::tch::Device;
use unet::{UNet, UNetConfig};

/// Flags of `lmzh unet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: UnetCommand,
}

/// Subcommands of `lmzh unet`.
#[derive(Debug, clap::Subcommand)]
pub enum UnetCommand {
    /// Parameters per block and forward FLOPs of a model folder or preset.
    Info(InfoArgs),
}

/// Flags of `lmzh unet info`.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// A diffusers UNet2DModel folder (config.json +
    /// diffusion_pytorch_model.safetensors) or a pipeline folder with unet/.
    #[arg(required_unless_present = "preset", conflicts_with = "preset")]
    pub dir: Option<PathBuf>,

    /// A built-in configuration instead of a folder: ddpm-cifar10,
    /// small-grey-28, small-grey-32, tiny.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,

    /// Sample size for the FLOP count, `S` or `HxW` (default: the config's
    /// sample_size).
    #[arg(long, value_name = "S|HxW", value_parser = parse_size)]
    pub size: Option<(i64, i64)>,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<(i64, i64), String> {
    let parse = |v: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|&x| x > 0)
            .ok_or_else(|| format!("invalid size {s:?}: expected S or HxW with positive integers"))
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => parse(s).map(|v| (v, v)),
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.command {
        UnetCommand::Info(a) => info(a),
    }
}

fn info(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let (source, unet) = match (&args.dir, &args.preset) {
        (Some(dir), _) => (
            dir.display().to_string(),
            UNet::load(dir, Device::Cpu)
                .with_context(|| format!("loading the U-Net of {}", dir.display()))?,
        ),
        (None, Some(name)) => {
            let config = UNetConfig::preset(name).context("--preset")?;
            let unet = tensor::tch::no_grad(|| UNet::new(&config, Device::Cpu))
                .with_context(|| format!("building preset {name}"))?;
            (format!("preset {name}"), unet)
        }
        (None, None) => bail!("give a model folder or --preset NAME"),
    };
    let config = unet.config();
    let (h, w) = match args.size.or_else(|| config.sample_hw()) {
        Some(hw) => hw,
        None => bail!("the config has no sample_size: give --size S or --size HxW"),
    };
    let params = unet.parameter_counts();
    let total_params: i64 = params.iter().map(|(_, n)| n).sum();
    let flops = unet
        .model
        .flops(h, w)
        .with_context(|| format!("counting FLOPs at {h}x{w}"))?;
    let total_flops: u64 = flops.iter().map(|(_, f)| f).sum();

    if args.json {
        let value = serde_json::json!({
            "source": source,
            "sample_size": [h, w],
            "parameters": params.iter().map(|(k, n)| (k.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "total_parameters": total_params,
            "flops": flops.iter().map(|(k, f)| (k.clone(), serde_json::json!(f))).collect::<serde_json::Map<_, _>>(),
            "total_flops": total_flops,
            "flop_convention": "forward pass of one sample; 1 multiply-add = 2 FLOPs; convolutions, linear layers and attention matmuls",
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }

    println!("{source}");
    println!(
        "  {} -> {} channels, block_out_channels {:?}, {} layers per block, {} time embedding{}",
        config.in_channels,
        config.out_channels,
        config.block_out_channels,
        config.layers_per_block,
        config.time_embedding_type,
        match config.class_embedding()? {
            None => String::new(),
            Some(unet::config::ClassEmbedding::Table(n)) => format!(", {n} classes"),
            Some(c) => format!(", class embedding {c:?}"),
        }
    );
    println!();
    println!(
        "{:<16} {:>14} {:>7} {:>16} {:>7}",
        "block", "parameters", "%", "FLOPs", "%"
    );
    let mut names: Vec<&String> = params.iter().map(|(k, _)| k).collect();
    for (k, _) in &flops {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let order = |k: &str| {
        flops
            .iter()
            .position(|(n, _)| n == k)
            .or_else(|| params.iter().position(|(n, _)| n == k))
            .unwrap_or(usize::MAX)
    };
    names.sort_by_key(|k| (block_rank(k), order(k)));
    for name in names {
        let p = params
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, n)| *n);
        let f = flops.iter().find(|(k, _)| k == name).map_or(0, |(_, f)| *f);
        println!(
            "{:<16} {:>14} {:>6.1}% {:>16} {:>6.1}%",
            name,
            group_digits(p as u64),
            percent(p as f64, total_params as f64),
            group_digits(f),
            percent(f as f64, total_flops as f64),
        );
    }
    println!(
        "{:<16} {:>14} {:>7} {:>16}",
        "total",
        group_digits(total_params as u64),
        "",
        group_digits(total_flops)
    );
    println!();
    println!(
        "{:.2} M parameters; {:.3} GFLOPs per forward pass at {h}x{w} (one sample)",
        total_params as f64 / 1e6,
        total_flops as f64 / 1e9
    );
    println!(
        "FLOPs: 1 multiply-add = 2 FLOPs; convolutions, linear layers and the attention \
         matmuls (QK^T, AV) are counted; norms, activations, softmax, additions and \
         resampling are not."
    );
    Ok(ExitCode::SUCCESS)
}

/// Forward order of the top-level blocks.
fn block_rank(name: &str) -> usize {
    match name.split('.').next().unwrap_or_default() {
        "conv_in" => 0,
        "time_proj" => 1,
        "time_embedding" => 2,
        "class_embedding" => 3,
        "down_blocks" => 4,
        "mid_block" => 5,
        "up_blocks" => 6,
        "conv_norm_out" => 7,
        "conv_out" => 8,
        _ => 9,
    }
}

fn percent(part: f64, total: f64) -> f64 {
    if total > 0.0 {
        100.0 * part / total
    } else {
        0.0
    }
}

/// `35746307` -> `35,746,307`.
fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digits() {
        assert_eq!(parse_size("28"), Ok((28, 28)));
        assert_eq!(parse_size("16x24"), Ok((16, 24)));
        assert!(parse_size("0").is_err() && parse_size("ax2").is_err());
        assert_eq!(group_digits(35_746_307), "35,746,307");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
    }

    #[test]
    fn presets_report() {
        let _rng = crate::torch_rng_lock();
        for preset in ["tiny", "small-grey-28"] {
            let args = InfoArgs {
                dir: None,
                preset: Some(preset.into()),
                size: None,
                json: true,
            };
            assert_eq!(info(&args).unwrap(), ExitCode::SUCCESS);
        }
        let bad = InfoArgs {
            dir: None,
            preset: Some("nope".into()),
            size: None,
            json: false,
        };
        assert!(format!("{:#}", info(&bad).unwrap_err()).contains("tiny"));
    }
}
