//! `lmzh train-vae`: trains the latent-diffusion VAE (`AutoencoderKL`) on
//! a data source and leaves a diffusers `vae/` folder, scaled for a latent
//! diffusion model, in its run folder; prints the held-out PSNR against two
//! bilinear baselines. The work is [`trainer::vae_train`]'s.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use trainer::vae_train::{train_vae, ReconstructionLoss, VaeTrainConfig, VaeTrainOptions};

/// Flags of `lmzh train-vae`; each sets the field of the same name (dashes
/// for underscores) of the config, over `--config FILE` when given.
#[derive(Debug, Clone, clap::Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "Example (the defaults: bundled digits at 32x32 grey, a 4x8x8 latent, \
600 steps, a few minutes on a 2-core CPU):\n  \
    lmzh train-vae --name digits-vae\n  \
    lmzh train-vae --data digits --steps 3000 --batch-size 32 --latent-channels 4 \
--block-out-channels 16,32,64 --kl-weight 1e-6 --perceptual-weight 0.1 --runs-dir runs --name digits-vae-p\n  \
    lmzh train-vae --data fashion-mnist --adversarial-weight 0.5 --disc-start 1000 --steps 3000\n\n\
The run folder gets vae/ (diffusers AutoencoderKL: config.json with scaling_factor = 1 / std of the \
held-out latents, diffusion_pytorch_model.safetensors), metrics.jsonl, metrics.json, config.toml and \
reconstructions.png (rows: held-out originals, reconstructions, bilinear at the latent's size, \
bilinear with the latent's number of values)."
)]
pub struct Args {
    /// A TOML config file (see --print-config for every key); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the resolved config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Run name (folder under --runs-dir); default vae-TIMESTAMP (UTC).
    #[arg(long)]
    pub name: Option<String>,
    /// Where run folders go [default: runs].
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// auto, cpu, cuda, cuda:N [default: auto].
    #[arg(long)]
    pub device: Option<String>,
    /// Seed of the weights, the held-out split, the shuffling and the noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Training data: digits, mnist, fashion-mnist, cifar10, a folder, or
    /// idx:IMAGES or idx:IMAGES,LABELS [default: digits].
    #[arg(long, value_name = "SPEC")]
    pub data: Option<String>,
    /// Held-out images: auto (a benchmark's test split, else
    /// --held-out-fraction of the data), fraction, or a source spec
    /// [default: auto].
    #[arg(long, value_name = "auto|fraction|SPEC")]
    pub held_out: Option<String>,
    /// Share of the data held out (not trained on) when no test split is
    /// used [default: 0.1].
    #[arg(long, value_name = "F")]
    pub held_out_fraction: Option<f64>,
    /// Held-out images evaluated at most [default: 1000].
    #[arg(long, value_name = "N")]
    pub max_held_out: Option<usize>,
    /// Training images kept in memory at most [default: all].
    #[arg(long, value_name = "N")]
    pub max_train_images: Option<usize>,
    /// Image side after resize and center crop [default: 32].
    #[arg(long, value_name = "PX")]
    pub resolution: Option<u32>,
    /// Image channels: 1, 3 or 4 [default: 1].
    #[arg(long)]
    pub channels: Option<u8>,

    /// VAE channels per level; each level but the last halves the
    /// resolution [default: 16,32,64, downsampling 4].
    #[arg(long, value_name = "C,C,...", value_delimiter = ',')]
    pub block_out_channels: Option<Vec<i64>>,
    /// ResNet blocks per encoder level [default: 1].
    #[arg(long, value_name = "N")]
    pub layers_per_block: Option<i64>,
    /// Latent channels [default: 4].
    #[arg(long, value_name = "N")]
    pub latent_channels: Option<i64>,
    /// GroupNorm groups, dividing every --block-out-channels entry [default: 8].
    #[arg(long, value_name = "N")]
    pub norm_num_groups: Option<i64>,
    /// Leave out the mid blocks' self-attention.
    #[arg(long)]
    pub no_mid_block_attention: bool,

    /// Training steps [default: 600].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step [default: 32].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak AdamW learning rate (warm-up, then cosine decay) [default: 1e-3].
    #[arg(long, visible_alias = "lr", value_name = "LR")]
    pub learning_rate: Option<f64>,
    /// Warm-up steps [default: 100].
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// Weight of the KL term, per image, against the summed reconstruction
    /// error [default: 1e-6, as latent diffusion].
    #[arg(long, value_name = "W")]
    pub kl_weight: Option<f64>,
    /// Reconstruction loss: l1 or l2 [default: l1].
    #[arg(long, value_name = "l1|l2")]
    pub reconstruction_loss: Option<String>,
    /// Weight of feature matching on the bundled classifier of the data
    /// (digits, mnist, fashion-mnist) [default: 0, off].
    #[arg(long, value_name = "W")]
    pub perceptual_weight: Option<f64>,
    /// Weight of the PatchGAN hinge loss (adaptive weight) [default: 0, off].
    #[arg(long, value_name = "W")]
    pub adversarial_weight: Option<f64>,
    /// Step the discriminator starts at [default: 500].
    #[arg(long, value_name = "STEP")]
    pub disc_start: Option<u64>,
    /// A metrics line every N steps [default: 50].
    #[arg(long, value_name = "N")]
    pub log_every: Option<u64>,
    /// Evaluate and write vae/ every N steps; 0: at the end only [default: 200].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// No progress display (without it: a bar on a terminal, plain lines otherwise).
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    /// The config these flags describe (not yet validated).
    pub fn resolve_config(&self) -> Result<VaeTrainConfig> {
        let mut c = match &self.config {
            Some(path) => VaeTrainConfig::load(path).context("--config")?,
            None => VaeTrainConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    c.$field = v.clone().into();
                }
            )*};
        }
        set!(
            name,
            runs_dir,
            seed,
            data,
            held_out,
            held_out_fraction,
            max_held_out,
            resolution,
            channels,
            block_out_channels,
            layers_per_block,
            latent_channels,
            norm_num_groups,
            steps,
            batch_size,
            learning_rate,
            warmup_steps,
            kl_weight,
            perceptual_weight,
            adversarial_weight,
            disc_start,
            log_every,
            checkpoint_every
        );
        if let Some(v) = self.max_train_images {
            c.max_train_images = Some(v);
        }
        if let Some(d) = &self.device {
            c.device = d.parse().context("--device")?;
        }
        if let Some(r) = &self.reconstruction_loss {
            c.reconstruction_loss = r
                .parse::<ReconstructionLoss>()
                .map_err(|e| anyhow::anyhow!(as_flag(&e)))?;
        }
        if self.no_mid_block_attention {
            c.mid_block_add_attention = false;
        }
        Ok(c)
    }
}

/// A library error, with a setting's field named as its flag
/// (`invalid setting kl_weight: ...` -> `--kl-weight: ...`).
fn as_flag(e: &trainer::Error) -> String {
    match e {
        trainer::Error::Setting { key, reason } if !key.contains('.') => {
            format!("--{}: {reason}", key.replace('_', "-"))
        }
        other => other.to_string(),
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let config = args.resolve_config()?;
    config
        .validate()
        .map_err(|e| anyhow::anyhow!(as_flag(&e)))?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    let opts = VaeTrainOptions {
        progress: !args.quiet,
        interrupt: Some(trainer::args::interrupt_flag()),
    };
    let s = train_vae(config, &opts).map_err(|e| anyhow::anyhow!(as_flag(&e)))?;
    if s.interrupted {
        println!("interrupted at step {}: evaluated and wrote vae/", s.steps);
    }
    let loss = s
        .last_loss
        .map(|l| format!("{l:.2}"))
        .unwrap_or_else(|| "n/a".into());
    println!(
        "trained {} steps of a {:.2} M-weight VAE in {:.0} s ({:.0} img/s), last loss {loss}",
        s.steps,
        s.parameters as f64 / 1e6,
        s.wall_seconds,
        s.images_per_second
    );
    println!("{}", s.eval.table());
    println!("run folder: {}", s.run_dir.display());
    println!(
        "  vae:      {} (diffusers AutoencoderKL)",
        s.run_dir.join("vae").display()
    );
    println!(
        "  strip:    {} (rows: originals, VAE, bilinear at latent size, bilinear at latent values)",
        s.run_dir.join("reconstructions.png").display()
    );
    println!("  metrics:  {}", s.run_dir.join("metrics.json").display());
    Ok(ExitCode::SUCCESS)
}
