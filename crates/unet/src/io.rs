//! Loading and saving in diffusers' layout, and [`UNet`]: a model together
//! with the `VarStore` that owns its weights.
//!
//! A model folder holds `config.json` and `diffusion_pytorch_model.safetensors`
//! (what `UNet2DModel.save_pretrained` writes). A pipeline folder (with
//! `model_index.json`, `unet/`, `scheduler/`, ...) is accepted too: its
//! `unet/` subfolder is used. Tensor names are the state-dict keys; a
//! missing, unexpected or wrongly shaped tensor is an error that lists all
//! of them. Checkpoints from before diffusers 0.14 that name the attention
//! weights `query`, `key`, `value`, `proj_attn` load too (diffusers renames
//! them the same way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Tensor};

use crate::condition_config::UNetConditionConfig;
use crate::unet_2d_condition::{Conditioning, UNet2DConditionModel};
use crate::{Error, Result, UNet2DModel, UNetConfig};

/// File name of the weights in a diffusers model folder.
pub const WEIGHTS_NAME: &str = "diffusion_pytorch_model.safetensors";
/// File name of the config in a diffusers model folder.
pub const CONFIG_NAME: &str = "config.json";

/// The model folder of `dir`: `dir` itself, or `dir/unet` when `dir` is a
/// pipeline folder (has `model_index.json`).
pub fn resolve_model_dir(dir: impl AsRef<Path>) -> Result<PathBuf> {
    let dir = dir.as_ref();
    let fail = |path: PathBuf, reason: &str| Error::NotAModelFolder {
        path,
        reason: reason.to_string(),
    };
    if !dir.is_dir() {
        return Err(fail(dir.to_path_buf(), "no such folder"));
    }
    if dir.join("model_index.json").is_file() {
        let unet = dir.join("unet");
        if unet.join(CONFIG_NAME).is_file() {
            return Ok(unet);
        }
        return Err(fail(
            dir.to_path_buf(),
            "a pipeline folder (it has model_index.json) without unet/config.json",
        ));
    }
    if dir.join(CONFIG_NAME).is_file() {
        return Ok(dir.to_path_buf());
    }
    Err(fail(
        dir.to_path_buf(),
        "neither a diffusers model folder (config.json, diffusion_pytorch_model.safetensors) \
         nor a pipeline folder (model_index.json, unet/)",
    ))
}

/// The current name of a state-dict key from before diffusers' attention
/// refactor (`attentions.0.query.weight` -> `attentions.0.to_q.weight`).
pub fn modern_key(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() >= 2 && parts.contains(&"attentions") {
        let leaf = parts.len() - 2;
        let new = match parts[leaf] {
            "query" => Some("to_q"),
            "key" => Some("to_k"),
            "value" => Some("to_v"),
            "proj_attn" => Some("to_out.0"),
            _ => None,
        };
        if let Some(new) = new {
            let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            p[leaf] = new.to_string();
            return p.join(".");
        }
    }
    name.to_string()
}

/// Copies the tensors of the safetensors file `path` into the variables of
/// `vs`, converting dtypes and renaming legacy attention keys
/// ([`modern_key`]). Every variable must be in the file with its shape and
/// the file must hold nothing else; otherwise nothing is copied and the
/// error lists every missing, unexpected and wrongly shaped tensor. Returns
/// the number of tensors copied. Any model whose variable names are its
/// diffusers state-dict keys loads this way.
pub fn load_weights_into(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<usize> {
    let path = path.as_ref();
    copy_weights_into(vs, path, read_weights(path)?)
}

/// The tensors of the safetensors file `path` on the CPU, legacy attention
/// keys renamed ([`modern_key`]).
fn read_weights(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(tensor::safetensors::load(path, Device::Cpu)?
        .into_iter()
        .map(|(k, v)| (modern_key(&k), v))
        .collect())
}

/// The tensors of the weights file `weights` (on the CPU, legacy keys
/// renamed) for a model whose config file `config` describes at least
/// `needed` weights: [`Error::ConfigExceedsWeights`] when that is more than
/// [`weights_cover`] allows, so that a loader refuses a config claiming
/// enormous sizes before it allocates the model.
pub fn read_weights_for(
    config: &Path,
    weights: &Path,
    needed: u128,
) -> Result<BTreeMap<String, Tensor>> {
    let file = read_weights(weights)?;
    let held: u128 = file.values().map(|t| t.numel() as u128).sum();
    if !weights_cover(held, needed) {
        return Err(Error::ConfigExceedsWeights {
            config: config.to_path_buf(),
            weights: weights.to_path_buf(),
            needed,
            held,
        });
    }
    Ok(file)
}

/// Whether a file of `held` weights may be loaded into a model of (at
/// least) `needed`: every weight of the model must be in the file, so more
/// than `held` cannot load, but a model up to twice the file (plus a
/// million weights) is allocated anyway, so that a config that is a little
/// off gets the full list of mismatched tensors; a bigger one is refused
/// before anything is allocated.
pub fn weights_cover(held: u128, needed: u128) -> bool {
    needed <= held.saturating_mul(2).saturating_add(1 << 20)
}

/// [`load_weights_into`] with the tensors of `path` already read (by
/// [`read_weights_for`]).
pub fn copy_weights_into(
    vs: &nn::VarStore,
    path: &Path,
    file: BTreeMap<String, Tensor>,
) -> Result<usize> {
    let vars = vs.variables();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    for (name, var) in &vars {
        match file.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.size() != var.size() => mismatched.push(format!(
                "{name} (file {:?}, model {:?})",
                t.size(),
                var.size()
            )),
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<String> = file
        .keys()
        .filter(|k| !vars.contains_key(*k))
        .cloned()
        .collect();
    if !(missing.is_empty() && unexpected.is_empty() && mismatched.is_empty()) {
        missing.sort();
        unexpected.sort();
        mismatched.sort();
        return Err(Error::WeightMismatch {
            path: path.to_path_buf(),
            missing,
            unexpected,
            mismatched,
        });
    }
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vars {
            let src = &file[&name];
            var.f_copy_(&src.f_to_kind(var.kind())?.f_to_device(var.device())?)?;
        }
        Ok(())
    })?;
    Ok(file.len())
}

/// Writes every variable of `vs` to the safetensors file `path`
/// (atomically, contiguous, with the `format: pt` metadata diffusers
/// writes), named by its state-dict key.
pub fn save_weights(vs: &nn::VarStore, path: impl AsRef<Path>) -> Result<()> {
    let detached: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach()))
        .collect();
    let refs: Vec<(&str, &Tensor)> = detached.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let metadata = tensor::safetensors::Metadata::from([("format".into(), "pt".into())]);
    tensor::safetensors::save(path.as_ref(), &refs, Some(&metadata))?;
    Ok(())
}

/// A `UNet2DModel` and the `VarStore` holding its weights.
#[derive(Debug)]
pub struct UNet {
    pub vs: nn::VarStore,
    pub model: UNet2DModel,
}

impl UNet {
    /// A freshly initialised model on `device` (f32).
    pub fn new(config: &UNetConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let model = UNet2DModel::new(vs.root(), config)?;
        Ok(UNet { vs, model })
    }

    /// Loads a diffusers model or pipeline folder onto `device` (weights as
    /// f32). The weights file is read first: a config that describes a
    /// model far bigger than the file holds ([`weights_cover`]) is an error
    /// before the model is allocated ([`UNetConfig::min_parameters`]).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let config_path = dir.join(CONFIG_NAME);
        let config = UNetConfig::from_file(&config_path)?;
        config.validate()?;
        let weights = weights_file(&dir)?;
        let file = read_weights_for(&config_path, &weights, config.min_parameters())?;
        let unet = tch::no_grad(|| UNet::new(&config, device))?;
        let n = copy_weights_into(&unet.vs, &weights, file)?;
        tracing::debug!(path = %weights.display(), tensors = n, "loaded UNet weights");
        Ok(unet)
    }

    /// Copies the tensors of a safetensors file into the model, converting
    /// dtypes. Every variable must be in the file with its shape, and the
    /// file must hold nothing else.
    pub fn load_weights(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let n = load_weights_into(&self.vs, path)?;
        tracing::debug!(path = %path.display(), tensors = n, "loaded UNet weights");
        Ok(())
    }

    /// Switches the model to channels-last memory format: every 4-d weight
    /// (the convolutions') is re-laid out in place and inputs are converted
    /// on the way in. The outputs are the same numbers (up to the order of
    /// float sums in the kernels); it pays where the convolution kernels
    /// prefer it (oneDNN on x86 for inference, cuDNN with tensor cores).
    /// Saving and checkpoints are unaffected (tensors are written
    /// contiguous).
    pub fn to_channels_last(&mut self) {
        tch::no_grad(|| {
            for (_, mut var) in self.vs.variables() {
                if var.dim() == 4 {
                    let cl = tensor::layout::to_channels_last(&var);
                    var.set_data(&cl);
                }
            }
        });
        self.model.channels_last = true;
    }

    /// The model's config.
    pub fn config(&self) -> &UNetConfig {
        &self.model.config
    }

    /// Every weight by state-dict key, in key order.
    pub fn state_dict(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// Writes `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`
    /// (creating `dir`), each atomically, so that
    /// `UNet2DModel.from_pretrained(dir)` loads the model in diffusers.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_weights(&self.vs, dir.join(WEIGHTS_NAME))?;
        let config = self.config().to_diffusers_json();
        tensor::fs::write_bytes_atomic(&dir.join(CONFIG_NAME), config.as_bytes())?;
        Ok(())
    }

    /// Total number of weights (trained or not, as diffusers' `num_parameters`).
    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// Number of weights per top-level block (`conv_in`, `time_proj`,
    /// `time_embedding`, `class_embedding`, `down_blocks.i`, `mid_block`,
    /// `up_blocks.i`, `conv_norm_out`, `conv_out`), in forward order; blocks
    /// without weights are left out.
    pub fn parameter_counts(&self) -> Vec<(String, i64)> {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for (name, t) in self.vs.variables() {
            *counts.entry(block_of(&name)).or_default() += t.numel() as i64;
        }
        let mut order = vec![
            "conv_in".to_string(),
            "time_proj".into(),
            "time_embedding".into(),
        ];
        order.push("class_embedding".into());
        order.extend((0..self.model.down_blocks.len()).map(|i| format!("down_blocks.{i}")));
        order.push("mid_block".into());
        order.extend((0..self.model.up_blocks.len()).map(|i| format!("up_blocks.{i}")));
        order.extend(["conv_norm_out".into(), "conv_out".into()]);
        let mut out: Vec<(String, i64)> = order
            .into_iter()
            .filter_map(|k| counts.remove(&k).map(|c| (k, c)))
            .collect();
        out.extend(counts);
        out
    }

    /// See [`UNet2DModel::forward`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.model.forward(sample, timesteps, class_labels)
    }

    /// See [`UNet2DModel::forward_t`].
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.model.forward_t(sample, timesteps, class_labels, train)
    }
}

/// Writes the weights of `vs` and the config text `config_json` into the
/// model folder `dir` (creating it), each file atomically.
pub fn save_model_folder(vs: &nn::VarStore, config_json: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_weights(vs, dir.join(WEIGHTS_NAME))?;
    tensor::fs::write_bytes_atomic(&dir.join(CONFIG_NAME), config_json.as_bytes())?;
    Ok(())
}

/// The weights file of a model folder, with a clear error for the pickle
/// format.
fn weights_file(dir: &Path) -> Result<PathBuf> {
    let weights = dir.join(WEIGHTS_NAME);
    if !weights.is_file() && dir.join("diffusion_pytorch_model.bin").is_file() {
        return Err(Error::NotAModelFolder {
            path: dir.to_path_buf(),
            reason: "only safetensors weights are read, and this folder has the pickle \
                     diffusion_pytorch_model.bin (re-save it with safe_serialization=True)"
                .into(),
        });
    }
    Ok(weights)
}

/// A `UNet2DConditionModel` and the `VarStore` holding its weights.
#[derive(Debug)]
pub struct ConditionUNet {
    pub vs: nn::VarStore,
    pub model: UNet2DConditionModel,
}

impl ConditionUNet {
    /// A freshly initialised model on `device` (f32).
    pub fn new(config: &UNetConditionConfig, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let model = UNet2DConditionModel::new(vs.root(), config)?;
        Ok(ConditionUNet { vs, model })
    }

    /// Loads a diffusers model folder, or the `unet/` of a pipeline folder,
    /// onto `device` (weights as f32). The weights file is read first: a
    /// config that describes a model far bigger than the file holds
    /// ([`weights_cover`]) is an error before the model is allocated
    /// ([`UNetConditionConfig::min_parameters`]).
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = resolve_model_dir(dir)?;
        let config_path = dir.join(CONFIG_NAME);
        let config = UNetConditionConfig::from_file(&config_path)?;
        config.validate()?;
        let weights = weights_file(&dir)?;
        let file = read_weights_for(&config_path, &weights, config.min_parameters())?;
        let unet = tch::no_grad(|| ConditionUNet::new(&config, device))?;
        copy_weights_into(&unet.vs, &weights, file)?;
        Ok(unet)
    }

    /// The model's config.
    pub fn config(&self) -> &UNetConditionConfig {
        &self.model.config
    }

    /// Writes a diffusers model folder that
    /// `UNet2DConditionModel.from_pretrained(dir)` loads.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        save_model_folder(&self.vs, &self.config().to_diffusers_json(), dir.as_ref())
    }

    /// Total number of weights.
    pub fn num_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// See [`UNet2DConditionModel::forward`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        cond: Conditioning<'_>,
    ) -> Result<Tensor> {
        self.model.forward(sample, timesteps, cond)
    }
}

/// `down_blocks.1.resnets.0.conv1.weight` -> `down_blocks.1`; `conv_in.weight` -> `conv_in`.
fn block_of(name: &str) -> String {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or_default();
    match (first, parts.next()) {
        ("down_blocks" | "up_blocks", Some(i)) => format!("{first}.{i}"),
        _ => first.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition_config::PerBlock;

    /// Channels-last changes the layout, not the numbers, and saves as the
    /// contiguous model would.
    #[test]
    fn channels_last_gives_the_same_outputs_and_files() {
        tensor::seed::seed_everything(3);
        let mut unet = UNet::new(&UNetConfig::tiny(), Device::Cpu).unwrap();
        let x = Tensor::randn([2, 1, 8, 8], (tch::Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[10i64, 500]);
        let before = unet.forward(&x, &t, None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        unet.save(dir.path().join("a")).unwrap();
        unet.to_channels_last();
        assert!(tensor::layout::is_channels_last(&unet.model.conv_out.ws));
        assert!(!unet.model.conv_out.ws.is_contiguous());
        let after = unet.forward(&x, &t, None).unwrap();
        assert!(tensor::layout::is_channels_last(&after));
        assert!(after.allclose(&before, 1e-5, 1e-5, false));
        unet.save(dir.path().join("b")).unwrap();
        let read = |d: &str| std::fs::read(dir.path().join(d).join(WEIGHTS_NAME)).unwrap();
        assert_eq!(read("a"), read("b"));
    }

    /// A small condition model: two levels of 16 and 32 channels, one with
    /// cross-attention, a mid block, a class table.
    fn small_condition_config() -> UNetConditionConfig {
        UNetConditionConfig {
            block_out_channels: vec![16, 32],
            down_block_types: vec!["CrossAttnDownBlock2D".into(), "DownBlock2D".into()],
            up_block_types: vec!["UpBlock2D".into(), "CrossAttnUpBlock2D".into()],
            layers_per_block: PerBlock::Each(vec![1, 2]),
            norm_num_groups: 8,
            cross_attention_dim: PerBlock::One(12),
            attention_head_dim: PerBlock::One(2),
            num_class_embeds: Some(5),
            ..UNetConditionConfig::default()
        }
    }

    /// The bound the loaders check a weights file against is a lower bound
    /// of the real count.
    #[test]
    fn min_parameters_is_a_lower_bound() {
        let mut wide_time = UNetConfig::tiny();
        wide_time.time_embedding_dim = Some(40);
        wide_time.num_class_embeds = Some(3);
        for cfg in [UNetConfig::tiny(), UNetConfig::small_grey(28), wide_time] {
            let n = UNet::new(&cfg, Device::Cpu).unwrap().num_parameters();
            let min = cfg.min_parameters();
            assert!(min <= n as u128 && min * 4 > n as u128, "{min} vs {n}");
        }
        let cfg = small_condition_config();
        let n = ConditionUNet::new(&cfg, Device::Cpu)
            .unwrap()
            .num_parameters();
        let min = cfg.min_parameters();
        assert!(min <= n as u128 && min * 4 > n as u128, "{min} vs {n}");
    }

    /// A config.json that claims enormous channel counts next to a small
    /// weights file is an error before the model is allocated (which would
    /// take terabytes).
    #[test]
    fn a_config_bigger_than_its_weights_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let tiny = UNetConfig::tiny();
        UNet::new(&tiny, Device::Cpu)
            .unwrap()
            .save(dir.path())
            .unwrap();
        let mut huge = tiny.clone();
        huge.block_out_channels = vec![1 << 20; 2];
        huge.validate().unwrap();
        std::fs::write(dir.path().join(CONFIG_NAME), huge.to_diffusers_json()).unwrap();
        let err = UNet::load(dir.path(), Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("config.json: describes a model of at least")
                && err.contains(WEIGHTS_NAME)
                && err.contains("does not belong"),
            "{err}"
        );

        let cond = small_condition_config();
        ConditionUNet::new(&cond, Device::Cpu)
            .unwrap()
            .save(dir.path())
            .unwrap();
        ConditionUNet::load(dir.path(), Device::Cpu).unwrap();
        let edits: [fn(&mut UNetConditionConfig); 5] = [
            |c: &mut UNetConditionConfig| c.cross_attention_dim = PerBlock::One(1 << 40),
            |c: &mut UNetConditionConfig| c.time_embedding_dim = Some(1 << 30),
            |c: &mut UNetConditionConfig| c.num_class_embeds = Some(1 << 40),
            |c: &mut UNetConditionConfig| c.transformer_layers_per_block = PerBlock::One(1 << 20),
            |c: &mut UNetConditionConfig| c.conv_in_kernel = (1 << 20) + 1,
        ];
        for edit in edits {
            let mut huge = cond.clone();
            edit(&mut huge);
            huge.validate().unwrap();
            std::fs::write(dir.path().join(CONFIG_NAME), huge.to_diffusers_json()).unwrap();
            let err = ConditionUNet::load(dir.path(), Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(err.contains("describes a model of at least"), "{err}");
        }
    }

    #[test]
    fn legacy_attention_keys_are_renamed() {
        assert_eq!(
            modern_key("mid_block.attentions.0.query.weight"),
            "mid_block.attentions.0.to_q.weight"
        );
        assert_eq!(
            modern_key("down_blocks.1.attentions.1.proj_attn.bias"),
            "down_blocks.1.attentions.1.to_out.0.bias"
        );
        assert_eq!(
            modern_key("down_blocks.1.resnets.0.conv1.weight"),
            "down_blocks.1.resnets.0.conv1.weight"
        );
        assert_eq!(
            block_of("up_blocks.2.upsamplers.0.conv.bias"),
            "up_blocks.2"
        );
        assert_eq!(block_of("conv_out.weight"), "conv_out");
    }
}
