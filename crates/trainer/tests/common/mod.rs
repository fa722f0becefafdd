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

/// Captions of [`captioned_squares`], by brightness.
#[allow(dead_code)]
pub const SQUARE_CAPTIONS: [&str; 2] = ["a dark square", "a bright square"];

/// `count` grey 8x8 images of a dark or bright square in `dir/squares`
/// (alternating), with a `metadata.jsonl` captioning each.
#[allow(dead_code)]
pub fn captioned_squares(dir: &Path, count: u8) -> std::path::PathBuf {
    use std::io::Write;
    let root = dir.join("squares");
    std::fs::create_dir_all(&root).unwrap();
    let mut meta = std::fs::File::create(root.join("metadata.jsonl")).unwrap();
    for k in 0..count {
        let bright = k % 2 == 1;
        let v = if bright { 200 + k } else { 20 + k };
        let img = image::GrayImage::from_fn(8, 8, |x, y| {
            image::Luma([if (2..6).contains(&x) && (2..6).contains(&y) {
                v
            } else {
                128
            }])
        });
        let name = format!("{k:02}.png");
        img.save(root.join(&name)).unwrap();
        let caption = SQUARE_CAPTIONS[bright as usize];
        writeln!(
            meta,
            "{{\"file_name\": \"{name}\", \"text\": \"{caption}\"}}"
        )
        .unwrap();
    }
    root
}

/// A tiny text-conditioned run on `count` [`captioned_squares`]: a U-Net of
/// 16 channels per level, a one-layer text encoder of width 16 reading 8
/// tokens.
#[allow(dead_code)]
pub fn tiny_text(dir: &Path, name: &str, steps: u64, count: u8) -> TrainConfig {
    let mut c = tiny(dir, name, steps, 4);
    c.data.source = data_pipeline::source::SourceSpec::Folder(captioned_squares(dir, count));
    c.model.class_conditional = false;
    let t = &mut c.model.text;
    t.block_out_channels = vec![16, 16];
    t.norm_num_groups = 4;
    t.attention_head_dim = 2;
    t.hidden_size = 16;
    t.intermediate_size = 32;
    t.num_hidden_layers = 1;
    t.num_attention_heads = 2;
    t.max_position_embeddings = 8;
    c
}
