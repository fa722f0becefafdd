//! What the trainer's integration tests share.

use std::path::Path;

use data_pipeline::preprocess::Preprocess;
use trainer::config::ModelConfig;
use trainer::TrainConfig;

/// A run that takes a second or two: tiny U-Net, digits at 8x8, no previews,
/// checkpoints or evaluation before the end; runs go to `runs_dir/<name>`.
pub fn tiny(runs_dir: &Path, name: &str, steps: u64, batch_size: usize) -> TrainConfig {
    let mut c = TrainConfig {
        name: name.to_string(),
        runs_dir: runs_dir.to_path_buf(),
        steps,
        batch_size,
        device: tensor::DeviceSpec::Cpu,
        ..TrainConfig::default()
    };
    c.data.preprocess = Preprocess {
        resolution: Some(8),
        ..Preprocess::default()
    };
    c.model = ModelConfig {
        class_conditional: true,
        ..ModelConfig::from_preset("tiny").unwrap()
    };
    c.optim.learning_rate = 3e-3;
    c.optim.warmup_steps = 2;
    c.log.every = 1;
    c.log.sample_every = 0;
    c.log.sample_images = 4;
    c.log.sample_steps = 2;
    c.log.sampler = "ddim".into();
    c.log.checkpoint_every = 0;
    c.eval.every = 0;
    c
}
