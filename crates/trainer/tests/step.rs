//! `Trainer::step`: a pure function of the training state and its batches,
//! and the very step the training loop runs.

mod common;

use tch::{Device, Kind, Tensor};
use trainer::{train, MicroBatch, StepOutput, TrainOptions, Trainer};

/// Fixed 8x8 grey batches with labels, the same on every call.
fn fixed_batches(n: usize) -> Vec<MicroBatch> {
    (0..n as i64)
        .map(|i| {
            let x = Tensor::arange(8 * 64, (Kind::Float, Device::Cpu)).reshape([8, 1, 8, 8]);
            MicroBatch {
                images: ((x * 0.37 + i as f64).sin() * 0.9),
                labels: Some(Tensor::arange(8, (Kind::Int64, Device::Cpu)).remainder(10)),
                captions: None,
            }
        })
        .collect()
}

/// A trainer of the tiny test config with no data (grad_accum 2).
fn detached(dir: &std::path::Path) -> Trainer {
    let mut c = common::tiny(dir, "detached", 4, 8);
    c.grad_accum = 2;
    let unet = c.model.unet_config(1, 8, 10).unwrap();
    Trainer::for_model(c, &unet).unwrap()
}

fn steps(t: &mut Trainer, n: usize) -> Vec<StepOutput> {
    let batches = fixed_batches(2);
    (0..n).map(|_| t.step(&batches).unwrap()).collect()
}

#[test]
fn a_step_on_fixed_batches_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (detached(dir.path()), detached(dir.path()));
    assert_eq!(a.params_digest(), b.params_digest(), "same initialisation");
    let before = a.params_digest();
    let (oa, ob) = (steps(&mut a, 3), steps(&mut b, 3));
    assert_eq!(oa, ob);
    assert_eq!(
        oa.iter().map(|o| o.step).collect::<Vec<_>>(),
        [1, 2, 3],
        "steps count from 1"
    );
    assert!(oa
        .iter()
        .all(|o| !o.skipped && o.images == 16 && o.loss > 0.0));
    assert_eq!(a.steps_done(), 3);
    assert_ne!(a.params_digest(), before, "the step trains");
    assert_eq!(a.params_digest(), b.params_digest());
    let ema = |t: &Trainer| trainer::distributed::digest(t.ema().shadow());
    assert_eq!(ema(&a), ema(&b));
    // A step takes grad_accum micro-batches, and a detached trainer has no loop.
    let err = a.step(&fixed_batches(1)).unwrap_err().to_string();
    assert!(err.contains("grad_accum"), "{err}");
    let err = a.run(&mut ()).unwrap_err().to_string();
    assert!(err.contains("Trainer::for_model"), "{err}");
}

#[test]
fn the_training_loop_is_step_on_the_loaders_batches() {
    let dir = tempfile::tempdir().unwrap();
    let summary = train(
        common::tiny(dir.path(), "loop", 6, 8),
        &TrainOptions::default(),
    )
    .unwrap();
    let mut t = Trainer::new(
        common::tiny(dir.path(), "by-hand", 6, 8),
        &TrainOptions::default(),
    )
    .unwrap();
    let mut losses = Vec::new();
    while t.steps_done() < 6 {
        let batches = t.next_batches().unwrap();
        losses.push(t.step(&batches).unwrap().loss);
    }
    assert_eq!(t.params_digest(), summary.params_digest);
    let logged: Vec<f64> = trainer::run_dir::read_losses(&summary.run_dir.join("metrics.jsonl"))
        .iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(logged, losses, "log.every = 1: one line per step");
    // save_checkpoint writes what the loop writes at its end.
    t.save_checkpoint().unwrap();
    let root = t.run_root().unwrap();
    assert!(root.join("checkpoints/step-000006.safetensors").is_file());
    assert!(root.join("unet/config.json").is_file());
}
