//! bf16 autocast training against fp32 on the bundled digits (tiny U-Net,
//! 8x8): the loss curve of a bf16 run stays as close to the fp32 run of the
//! same seed as fp32 runs of different seeds stay to each other.

mod common;

use trainer::{train, TrainOptions};

const STEPS: u64 = 300;
const WINDOW: usize = 50;

/// Mean loss over each window of `WINDOW` steps.
fn curve(cfg: trainer::TrainConfig) -> Vec<f64> {
    let s = train(cfg, &TrainOptions::default()).unwrap();
    let losses = trainer::run_dir::read_losses(&s.run_dir.join("metrics.jsonl"));
    assert_eq!(losses.len() as u64, STEPS);
    losses
        .chunks(WINDOW)
        .map(|w| w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64)
        .collect()
}

fn max_gap(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn bf16_loss_curve_stays_within_the_fp32_seed_spread() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: u64, precision: tensor::Precision| {
        let mut c = common::tiny(dir.path(), name, STEPS, 16);
        c.seed = seed;
        c.mixed_precision = precision;
        c.log.every = 1;
        curve(c)
    };
    let fp32: Vec<Vec<f64>> = (0..3)
        .map(|s| run(&format!("fp32-{s}"), s, tensor::Precision::Fp32))
        .collect();
    let bf16 = run("bf16-0", 0, tensor::Precision::Bf16);

    // bf16 really ran: same seed, same batches, different arithmetic.
    assert_ne!(bf16, fp32[0], "the bf16 run reproduced fp32 bit for bit");
    // And it learned as fp32 did.
    assert!(
        bf16[bf16.len() - 1] < 0.8 * bf16[0],
        "bf16 did not learn: {bf16:?}"
    );
    let spread = max_gap(&fp32[1], &fp32[0])
        .max(max_gap(&fp32[2], &fp32[0]))
        .max(max_gap(&fp32[2], &fp32[1]));
    let gap = max_gap(&bf16, &fp32[0]);
    eprintln!("bf16 vs fp32 gap {gap:.4}, fp32 seed spread {spread:.4}");
    assert!(
        gap <= spread,
        "bf16 vs fp32 (seed 0) differ by {gap:.4} per {WINDOW}-step window; \
         fp32 seeds differ by up to {spread:.4}\nbf16 {bf16:?}\nfp32 {fp32:?}"
    );
}

#[test]
fn fp16_training_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::tiny(dir.path(), "fp16", 2, 4);
    c.mixed_precision = tensor::Precision::Fp16;
    let err = train(c, &TrainOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("mixed_precision") && err.contains("bf16"),
        "{err}"
    );
}
