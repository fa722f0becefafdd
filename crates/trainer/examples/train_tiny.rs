//! Trains a tiny class-conditional U-Net on the bundled digits (8x8) for 50
//! steps on the CPU, one [`Trainer::step`] at a time, printing the loss,
//! then writes a checkpoint and the diffusers export to
//! `runs/train-tiny/`: a few seconds on two cores.
//!
//! Run: `cargo run -p trainer --example train_tiny`, then sample from it
//! with `cargo run -p sampler -- --model runs/train-tiny`.

use trainer::config::{DeviceSpec, ModelConfig};
use trainer::{TrainConfig, TrainOptions, Trainer};

fn main() -> trainer::Result<()> {
    // The default preset (bundled digits, v-prediction, AdamW, EMA), made tiny.
    let mut config = TrainConfig {
        name: "train-tiny".into(),
        steps: 50,
        batch_size: 16,
        device: DeviceSpec::Cpu,
        ..TrainConfig::preset("default")?
    };
    config.data.preprocess.resolution = Some(8);
    config.optim.warmup_steps = 10;
    config.model = ModelConfig {
        class_conditional: true,
        ..ModelConfig::from_preset("tiny")?
    };

    // Sets up the run folder, data loader, model, optimiser and EMA.
    let mut trainer = Trainer::new(config, &TrainOptions::default())?;
    while trainer.steps_done() < trainer.config().steps {
        let batches = trainer.next_batches()?;
        let out = trainer.step(&batches)?;
        if out.step % 10 == 0 {
            println!(
                "step {:3}  loss {:.4}  lr {:.2e}",
                out.step, out.loss, out.lr
            );
        }
    }
    trainer.save_checkpoint()?;
    println!("run folder: {}", trainer.run_root().unwrap().display());
    Ok(())
}
