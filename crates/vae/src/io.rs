//! Loading and saving in diffusers' layout, and [`Vae`]: an
//! [`AutoencoderKL`] together with the `VarStore` that owns its weights,
//! and the latent scaling the diffusion pipelines apply.
//!
//! A model folder holds `config.json` and `diffusion_pytorch_model.safetensors`
//! (what `AutoencoderKL.save_pretrained` writes). A pipeline folder (with
//! `model_index.json`, `unet/`, `vae/`, ...) is accepted too: its `vae/`
//! subfolder is used. Tensor names are the state-dict keys; a missing,
//! unexpected or wrongly shaped tensor is an error that lists all of them.
//! Checkpoints from before diffusers 0.14 that name the mid-block attention
//! weights `query`, `key`, `value`, `proj_attn` load too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};

use crate::autoencoder_kl::AutoencoderKL;
use crate::vae::DiagonalGaussianDistribution;
use crate::{Error, Result, VaeConfig};

/// File name of the weights in a diffusers model folder.
pub const WEIGHTS_NAME: &str = unet::io::WEIGHTS_NAME;
/// File name of the config in a diffusers model folder.
pub const CONFIG_NAME: &str = unet::io::CONFIG_NAME;

/// The VAE folder of `dir`: `dir` itself, or `dir/vae` when `dir` is a
/// pipeline folder (has `model_index.json`).
pub fn resolve_model_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let fail = |reason: &str| Error::NotAModelFolder {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if !dir.is_dir() {
        return Err(fail("no such folder"));
    }
    if dir.join("model_index.json").is_file() {
        let vae = dir.join("vae");
        if vae.join(CONFIG_NAME).is_file() {
            return Ok(vae);
        }
        return Err(fail(
            "a pipeline folder (it has model_index.json) without vae/config.json",
        ));
    }
    if dir.join(CONFIG_NAME).is_file() {
        return Ok(dir.to_path_buf());
    }
    Err(fail(
        "neither a diffusers model folder (config.json, diffusion_pytorch_model.safetensors) \
         nor a pipeline folder (model_index.json, vae/)",
    ))
}

/// Which latent [`Vae::encode_latents`] takes from the posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentDraw {
    /// The mean (deterministic; diffusers' `sample_mode="argmax"`).
    Mode,
    /// A draw from libtorch's global generator (diffusers' img2img and
    /// training scripts sample).
    Sample,
}

/// An `AutoencoderKL` and the `VarStore` holding its weights.
#[derive(Debug)]
pub struct Vae {
    pub vs: nn::VarStore,
    pub model: AutoencoderKL,
}

impl Vae {
    /// A freshly initialised model on `device` (f32), initialised as a
    /// freshly constructed diffusers `AutoencoderKL`.
    pub fn new(config: &VaeConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let model = AutoencoderKL::new(vs.root(), config)?;
        Ok(Vae { vs, model })
    }

    /// Loads a diffusers VAE folder, or the `vae/` of a pipeline folder,
    /// onto `device` (weights as f32). The weights file is read first: a
    /// config that describes a model far bigger than the file holds
    /// ([`unet::io::weights_cover`]) is an error before the model is
    /// allocated ([`VaeConfig::min_parameters`]).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let config_path = dir.join(CONFIG_NAME);
        let config = VaeConfig::from_file(&config_path)?;
        config.validate()?;
        let weights = dir.join(WEIGHTS_NAME);
        if !weights.is_file() && dir.join("diffusion_pytorch_model.bin").is_file() {
            return Err(Error::NotAModelFolder {
                path: dir,
                reason: "only safetensors weights are read, and this folder has the pickle \
                         diffusion_pytorch_model.bin (re-save it with safe_serialization=True)"
                    .into(),
            });
        }
        let file = unet::io::read_weights_for(&config_path, &weights, config.min_parameters())?;
        let vae = tch::no_grad(|| Vae::new(&config, device))?;
        let n = unet::io::copy_weights_into(&vae.vs, &weights, file)?;
        tracing::debug!(path = %weights.display(), tensors = n, "loaded VAE weights");
        Ok(vae)
    }

    /// Copies the tensors of a safetensors file into the model, converting
    /// dtypes. Every variable must be in the file with its shape, and the
    /// file must hold nothing else.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let n = unet::io::load_weights_into(&self.vs, path)?;
        tracing::debug!(path = %path.display(), tensors = n, "loaded VAE weights");
        Ok(())
    }

    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`
    /// (creating `dir`), each atomically, so that
    /// `AutoencoderKL.from_pretrained(dir)` loads the model in diffusers.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        unet::io::save_weights(&self.vs, dir.join(WEIGHTS_NAME))?;
        let config = self.config().to_diffusers_json();
        tensor::fs::write_bytes_atomic(&dir.join(CONFIG_NAME), config.as_bytes())?;
        tracing::debug!(dir = %dir.display(), "saved VAE");
        Ok(())
    }

    /// The model's config.
    pub fn config(&self) -> &VaeConfig {
        &self.model.config
    }

    /// Every weight by state-dict key, in key order.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// Total number of weights.
    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// See [`AutoencoderKL::enable_tiling`].
    pub fn enable_tiling(&mut self) {
        self.model.enable_tiling();
    }

    /// See [`AutoencoderKL::disable_tiling`].
    pub fn disable_tiling(&mut self) {
        self.model.disable_tiling();
    }

    /// The latent posterior of images `x` (`[N, C, H, W]` in [-1, 1]); see
    /// [`AutoencoderKL::encode`]. Runs without gradients.
    pub fn encode(&self, x: &Tensor) -> Result<DiagonalGaussianDistribution> {
        tch::no_grad(|| self.model.encode(&self.to_model(x)?))
    }

    /// Images (about [-1, 1]) of unscaled latents `z`; see
    /// [`AutoencoderKL::decode`]. Runs without gradients.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        tch::no_grad(|| self.model.decode(&self.to_model(z)?))
    }

    /// The diffusion model's latents of images `x`: the posterior's mean or
    /// a draw from it, scaled by [`Vae::scale_latents`].
    pub fn encode_latents(&self, x: &Tensor, draw: LatentDraw) -> Result<Tensor> {
        let posterior = self.encode(x)?;
        let z = match draw {
            LatentDraw::Mode => posterior.mode(),
            LatentDraw::Sample => posterior.sample(),
        };
        self.scale_latents(&z)
    }

    /// Images of the diffusion model's latents: [`Vae::unscale_latents`],
    /// then [`Vae::decode`].
    pub fn decode_latents(&self, latents: &Tensor) -> Result<Tensor> {
        self.decode(&self.unscale_latents(latents)?)
    }

    /// VAE latents `z` to the diffusion model's latents, as diffusers'
    /// pipelines scale them: `(z - latents_mean) * scaling_factor /
    /// latents_std` when the config has both statistics (SDXL pipelines),
    /// else `(z - shift_factor) * scaling_factor` (`shift_factor` 0 when
    /// null; SD 1.x: `z * 0.18215`).
    pub fn scale_latents(&self, z: &Tensor) -> Result<Tensor> {
        let cfg = self.config();
        Ok(match self.latent_statistics(z)? {
            Some((mean, std)) => (z - mean) * cfg.scaling_factor / std,
            None => (z - cfg.shift_factor.unwrap_or(0.0)) * cfg.scaling_factor,
        })
    }

    /// The inverse of [`Vae::scale_latents`]: `latents * latents_std /
    /// scaling_factor + latents_mean`, or `latents / scaling_factor +
    /// shift_factor`.
    pub fn unscale_latents(&self, latents: &Tensor) -> Result<Tensor> {
        let cfg = self.config();
        Ok(match self.latent_statistics(latents)? {
            Some((mean, std)) => latents * std / cfg.scaling_factor + mean,
            None => latents / cfg.scaling_factor + cfg.shift_factor.unwrap_or(0.0),
        })
    }

    /// `latents_mean` and `latents_std` as `[1, C, 1, 1]` tensors like `z`,
    /// when the config has both.
    fn latent_statistics(&self, z: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let cfg = self.config();
        let (Some(mean), Some(std)) = (&cfg.latents_mean, &cfg.latents_std) else {
            return Ok(None);
        };
        let c = z.size().get(1).copied().unwrap_or(0);
        if c != mean.len() as i64 {
            return Err(Error::Input(format!(
                "latents with {c} channels for a VAE with {} latent channels",
                mean.len()
            )));
        }
        let as_tensor = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::from_slice(v)
                .f_to_kind(z.kind())?
                .f_to_device(z.device())?
                .f_view([1, -1, 1, 1])?)
        };
        Ok(Some((as_tensor(mean)?, as_tensor(std)?)))
    }

    /// An input moved to the weights' device as float32 (the weights' kind).
    fn to_model(&self, x: &Tensor) -> Result<Tensor> {
        let kind = self.model.encoder.conv_in.ws.kind();
        Ok(x.f_to_kind(kind)?.f_to_device(self.vs.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn tiny() -> VaeConfig {
        VaeConfig {
            block_out_channels: vec![8, 16],
            down_block_types: vec!["DownEncoderBlock2D".into(); 2],
            up_block_types: vec!["UpDecoderBlock2D".into(); 2],
            norm_num_groups: 4,
            latent_channels: 2,
            sample_size: unet::config::SampleSize::Square(8),
            ..VaeConfig::default()
        }
    }

    #[test]
    fn latent_scaling_inverts_and_follows_the_config() {
        let mut cfg = tiny();
        cfg.scaling_factor = 0.5;
        cfg.shift_factor = Some(0.25);
        let vae = Vae::new(&cfg, Device::Cpu).unwrap();
        let z = Tensor::randn([1, 2, 3, 3], (Kind::Float, Device::Cpu));
        let latents = vae.scale_latents(&z).unwrap();
        assert!(latents.allclose(&((&z - 0.25) * 0.5), 1e-6, 1e-6, false));
        assert!(vae
            .unscale_latents(&latents)
            .unwrap()
            .allclose(&z, 1e-6, 1e-6, false));

        cfg.latents_mean = Some(vec![1.0, -1.0]);
        cfg.latents_std = Some(vec![2.0, 4.0]);
        let vae = Vae::new(&cfg, Device::Cpu).unwrap();
        let latents = vae.scale_latents(&z).unwrap();
        let c1 = (z.select(1, 1) + 1.0) * 0.5 / 4.0;
        assert!(latents.select(1, 1).allclose(&c1, 1e-6, 1e-6, false));
        assert!(vae
            .unscale_latents(&latents)
            .unwrap()
            .allclose(&z, 1e-5, 1e-5, false));
        assert!(vae.scale_latents(&z.narrow(1, 0, 1)).is_err());
    }

    #[test]
    fn shapes_are_checked_and_latents_are_smaller() {
        let vae = Vae::new(&tiny(), Device::Cpu).unwrap();
        let x = Tensor::rand([2, 3, 8, 12], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let posterior = vae.encode(&x).unwrap();
        assert_eq!(posterior.mean.size(), [2, 2, 4, 6]);
        assert_eq!(vae.decode(&posterior.mode()).unwrap().size(), [2, 3, 8, 12]);
        for bad in [
            Tensor::zeros([2, 1, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::zeros([3, 8, 8], (Kind::Float, Device::Cpu)),
            Tensor::zeros([1, 3, 7, 8], (Kind::Float, Device::Cpu)),
        ] {
            assert!(vae.encode(&bad).is_err(), "{:?}", bad.size());
        }
        let err = vae
            .decode(&Tensor::zeros([1, 3, 4, 4], (Kind::Float, Device::Cpu)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[N, 2, H, W]"), "{err}");
    }

    /// A config.json claiming enormous sizes next to a small weights file is
    /// an error before the model is allocated; the bound it is checked
    /// with is a lower bound of the real count.
    #[test]
    fn a_config_bigger_than_its_weights_is_refused_before_allocating() {
        let mut no_quant = tiny();
        no_quant.use_quant_conv = false;
        no_quant.layers_per_block = 2;
        for cfg in [tiny(), no_quant] {
            let n = Vae::new(&cfg, Device::Cpu).unwrap().num_parameters() as u128;
            let min = cfg.min_parameters();
            assert!(min <= n && min * 4 > n, "{min} vs {n}");
        }
        let dir = tempfile::tempdir().unwrap();
        Vae::new(&tiny(), Device::Cpu)
            .unwrap()
            .save(dir.path())
            .unwrap();
        Vae::load(dir.path(), Device::Cpu).unwrap();
        let edits: [fn(&mut VaeConfig); 4] = [
            |c| c.block_out_channels = vec![1 << 20; 2],
            |c| c.latent_channels = 1 << 40,
            |c| c.layers_per_block = 1 << 40,
            |c| c.in_channels = 1 << 50,
        ];
        for edit in edits {
            let mut huge = tiny();
            edit(&mut huge);
            huge.validate().unwrap();
            std::fs::write(dir.path().join(CONFIG_NAME), huge.to_diffusers_json()).unwrap();
            let err = Vae::load(dir.path(), Device::Cpu).unwrap_err().to_string();
            assert!(
                err.contains("config.json: describes a model of at least")
                    && err.contains(WEIGHTS_NAME),
                "{err}"
            );
        }
    }

    #[test]
    fn folders_resolve_to_their_vae() {
        let tmp = tempfile::tempdir().unwrap();
        let err = resolve_model_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("pipeline folder"), "{err}");
        std::fs::write(tmp.path().join("model_index.json"), "{}").unwrap();
        let err = resolve_model_dir(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("vae/config.json"), "{err}");
        std::fs::create_dir(tmp.path().join("vae")).unwrap();
        std::fs::write(tmp.path().join("vae").join(CONFIG_NAME), "{}").unwrap();
        assert_eq!(
            resolve_model_dir(tmp.path()).unwrap(),
            tmp.path().join("vae")
        );
    }
}
