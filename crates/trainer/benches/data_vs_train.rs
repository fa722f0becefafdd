//! Is data ever the bottleneck? The loader's images per second for the
//! default preset's data and preprocessing, against the images per second
//! the default preset's training loop consumes, measured in one run.
//!
//! Run: `cargo xtask bench data` (or `cargo bench -p trainer --bench data_vs_train`).

use std::time::Instant;

use data_pipeline::loader::{DataLoader, Position};
use data_pipeline::source::OpenOptions;
use trainer::{train, TrainConfig, TrainOptions};

fn main() {
    let steps: u64 = std::env::var("LMZH_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = TrainConfig::preset("default").expect("preset");
    config.device = tensor::DeviceSpec::Cpu;
    config.runs_dir = dir.path().to_path_buf();
    config.name = "bench".into();
    config.steps = steps;
    config.log.sample_every = 0;
    config.log.checkpoint_every = 0;
    config.log.sample_images = 1;
    config.log.sample_steps = 1;

    // The loader alone, as the trainer configures it.
    let dataset = config
        .data
        .source
        .open(&OpenOptions::default())
        .expect("data");
    let mut loader = DataLoader::new(
        dataset,
        config.data.preprocess.clone(),
        config.loader(),
        Position::default(),
    )
    .expect("loader");
    loader.next_batch().expect("warm-up");
    let batches = 300;
    let t = Instant::now();
    let mut images = 0;
    for _ in 0..batches {
        images += loader.next_batch().expect("batch").indices.len();
    }
    let loader_rate = images as f64 / t.elapsed().as_secs_f64();
    drop(loader);

    // The training loop of the default preset (model, optimiser, EMA, loader).
    let summary = train(config, &TrainOptions::default()).expect("training");
    let train_rate = summary.images_per_second;

    println!("{:<46} {:>10}", "what", "img/s");
    println!(
        "{:<46} {:>10.0}",
        "loader: digits, default preprocessing, batch 32", loader_rate
    );
    println!(
        "{:<46} {:>10.0}",
        format!("training loop: default preset, {steps} steps"),
        train_rate
    );
    println!(
        "loader / training = {:.1}x (data is never the bottleneck above 1x; the target is 5x)",
        loader_rate / train_rate
    );
}
