//! `lmzh forward` end to end: the strip it writes and the errors it gives.

use std::path::{Path, PathBuf};
use std::process::Command;

fn lmzh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lmzh"))
        .args(args)
        .output()
        .expect("lmzh runs")
}

fn digits_model() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/models/digits")
        .display()
        .to_string()
}

fn size_of(p: &Path) -> (u32, u32) {
    image::image_dimensions(p).unwrap()
}

#[test]
fn forward_writes_one_row_per_schedule_and_checks_timesteps() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]))
        .save(&input)
        .unwrap();
    let out = dir.path().join("forward.png");
    let (input, out_s) = (input.to_str().unwrap(), out.to_str().unwrap());
    let run = lmzh(&[
        "forward",
        "--image",
        input,
        "--beta-schedule",
        "linear,cosine",
        "--steps",
        "0,500,999",
        "--out",
        out_s,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("linear:") && stdout.contains("squaredcos_cap_v2:"),
        "{stdout}"
    );
    assert_eq!(size_of(&out), (3 * 30 + 2, 2 * 30 + 2));
    let run = lmzh(&[
        "forward",
        "--image",
        input,
        "--model",
        &digits_model(),
        "--steps",
        "0,1000",
        "--out",
        out_s,
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("timestep 1000"),
        "{stderr}"
    );
}
