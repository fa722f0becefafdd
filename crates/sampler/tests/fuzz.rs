//! Hostile bytes into the model-folder loaders: `Pipeline::open` on a
//! folder whose `model_index.json`, `unet/config.json`,
//! `scheduler/scheduler_config.json` and `run.json` come from the input,
//! then what sampling derives from them (null label, input spec, every
//! solver's setup); and `run.json` alone. Errors, never a panic or an
//! abort. `LMZH_FUZZ_CASES` sets the number of inputs (see
//! `tests/fuzz_harness.rs`; `cargo xtask fuzz`).

#[path = "../../../tests/fuzz_harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use sampler::pipeline::read_run_info;
use sampler::{by_name, InputSpec, Pipeline, SolverOptions, SOLVER_NAMES};
use unet::UNetConfig;

#[global_allocator]
static ALLOC: harness::CappedAlloc = harness::CappedAlloc;

/// Separates the files of one input.
const MARKER: &[u8] = b"\xff\xfe";

fn digits() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/digits")
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

const FILES: [&str; 4] = [
    "model_index.json",
    "unet/config.json",
    "scheduler/scheduler_config.json",
    "run.json",
];

fn folder_seeds() -> Vec<Vec<u8>> {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_pipeline");
    let mut seeds = Vec::new();
    for root in [digits(), tiny] {
        let parts: Vec<Vec<u8>> = FILES
            .iter()
            .map(|f| std::fs::read(root.join(f)).unwrap_or_default())
            .collect();
        seeds.push(parts.join(MARKER));
        // A bare model folder: no index, no scheduler.
        seeds.push([&b""[..], MARKER, &parts[1]].concat());
    }
    seeds
}

/// Writes the input's parts as the folder's files (an absent part: no
/// file); returns how many parts there were.
fn write_folder(root: &Path, bytes: &[u8]) -> usize {
    let mut parts: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(MARKER.len()).position(|w| w == MARKER) {
        parts.push(&rest[..at]);
        rest = &rest[at + MARKER.len()..];
    }
    parts.push(rest);
    for (i, file) in FILES.iter().enumerate() {
        let path = root.join(file);
        match parts.get(i) {
            // An empty model index stands for none (a bare model folder).
            Some(p) if !(i == 0 && p.is_empty()) => std::fs::write(&path, p).unwrap(),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    parts.len()
}

#[test]
fn model_folder_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let root = dir.path().join("model");
    for sub in ["unet", "scheduler"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let options = SolverOptions::default();
    let mut turn = 0usize;
    harness::fuzz("model-folder", &folder_seeds(), |bytes| {
        write_folder(&root, bytes);
        let Ok(pipe) = Pipeline::open(&root) else {
            return false;
        };
        let _ = pipe.class_names();
        if let Ok(config) = UNetConfig::from_file(pipe.unet_dir().join("config.json")) {
            let _ = pipe.null_label(&config);
            if config.validate().is_ok() {
                let (h, w) = config.sample_hw().unwrap_or((28, 28));
                let _ = pipe.input_spec([config.in_channels, h, w]);
            }
        }
        // One solver per input, in turn (each sets up its own tables).
        turn += 1;
        let name = SOLVER_NAMES[turn % SOLVER_NAMES.len()];
        let steps = [1, 10, 25][turn % 3];
        if let Ok(solver) = by_name(name, &pipe.scheduler, steps, &options) {
            let _ = solver.timesteps();
        }
        true
    });
}

#[test]
fn run_json_loader_survives_hostile_bytes() {
    let dir = harness::scratch_dir();
    let path = dir.path().join("run.json");
    let seeds = vec![
        read(digits().join("run.json")),
        br#"{"class_names": [], "preprocess": {"resolution": 32, "crop": "random", "random_flip": true, "channels": 3, "resize_filter": "bilinear"}, "source": "cifar10"}"#.to_vec(),
    ];
    harness::fuzz("run-json", &seeds, |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let Ok(Some(run)) = read_run_info(dir.path()) else {
            return false;
        };
        for chw in [[1, 28, 28], [3, 32, 32], [4, 64, 48]] {
            let _ = InputSpec::new(chw, run.preprocess.as_ref());
        }
        true
    });
}
