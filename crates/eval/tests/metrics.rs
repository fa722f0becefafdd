//! Parity of the metrics with float64 numpy references: the Frechet distance,
//! KID's unbiased MMD^2 on all pairs, and precision/recall/density/coverage
//! as the `prdc` package computes them, on two fixed feature sets (real
//! [300, 16], fake [250, 16]).
//!
//! Fixtures: `cargo xtask py scripts/gen_eval_fixtures.py`.

use std::path::PathBuf;

use eval::metrics::{self, Gaussian, Options};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// Relative tolerance of the FD and KID comparisons (f64 on both sides; the
/// sums differ only in order).
const RELATIVE: f64 = 1e-6;

#[derive(Debug, Deserialize)]
struct Expected {
    num_real: i64,
    num_fake: i64,
    dim: i64,
    fd: f64,
    mmd2_all_pairs: f64,
    kid_one_subset: f64,
    kid_one_subset_rows: i64,
    prdc: Vec<PrdcCase>,
}

#[derive(Debug, Deserialize)]
struct PrdcCase {
    k: usize,
    precision: f64,
    recall: f64,
    density: f64,
    coverage: f64,
    fakes_in_real_manifold: i64,
    reals_in_fake_manifold: i64,
    fake_real_ball_pairs: i64,
    real_balls_covered: i64,
}

struct Fixture {
    real: Tensor,
    fake: Tensor,
    expected: Expected,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load() -> Fixture {
    let regenerate = "regenerate with `cargo xtask py scripts/gen_eval_fixtures.py`";
    let path = fixture_dir().join("metrics.safetensors");
    let mut tensors = tensor::safetensors::load(&path, Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}; {regenerate}"));
    let mut take = |name: &str| {
        tensors
            .remove(name)
            .unwrap_or_else(|| panic!("{}: no tensor {name:?}; {regenerate}", path.display()))
    };
    let (real, fake) = (take("real"), take("fake"));
    let path = fixture_dir().join("metrics.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; {regenerate}", path.display()));
    let expected: Expected =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(real.kind(), Kind::Double);
    assert_eq!(real.size(), [expected.num_real, expected.dim]);
    assert_eq!(fake.size(), [expected.num_fake, expected.dim]);
    Fixture {
        real,
        fake,
        expected,
    }
}

fn assert_close(what: &str, got: f64, expected: f64) {
    let err = (got - expected).abs() / expected.abs();
    assert!(
        err <= RELATIVE,
        "{what}: {got} vs {expected} (relative error {err:.2e})"
    );
}

#[test]
fn frechet_distance_matches_numpy() {
    let f = load();
    assert_close("fd", metrics::fd(&f.real, &f.fake).unwrap(), f.expected.fd);
    // float32 features lose precision in the features, not in the method
    let fd32 = metrics::fd(&f.real.to_kind(Kind::Float), &f.fake.to_kind(Kind::Float)).unwrap();
    assert!(
        (fd32 - f.expected.fd).abs() <= 1e-4 * f.expected.fd,
        "{fd32}"
    );
}

#[test]
fn a_cached_real_gaussian_gives_the_same_distance() {
    let f = load();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("real_gaussian.safetensors");
    let tensors = Gaussian::of(&f.real).unwrap().to_tensors();
    tensor::safetensors::save(&path, &tensors.iter().collect::<Vec<_>>(), None).unwrap();
    let cached = Gaussian::from_tensors(&tensor::safetensors::load(&path, Device::Cpu).unwrap());
    let fd = metrics::frechet_distance(&cached.unwrap(), &Gaussian::of(&f.fake).unwrap());
    assert_close("fd (cached)", fd.unwrap(), f.expected.fd);
}

#[test]
fn kid_matches_numpy_on_all_pairs() {
    let f = load();
    let e = &f.expected;
    let all = metrics::mmd2_unbiased(&f.real, &f.fake).unwrap();
    assert_close("mmd2_all_pairs", all, e.mmd2_all_pairs);
    // One subset as large as both sets is a permutation of each: all pairs.
    let real = f.real.narrow(0, 0, e.kid_one_subset_rows);
    let rows = e.kid_one_subset_rows as usize;
    for seed in [0, 1] {
        let kid = metrics::kid(&real, &f.fake, 1, rows, seed).unwrap();
        assert_close("kid_one_subset", kid.mean, e.kid_one_subset);
        assert_eq!(kid.std, 0.0);
    }
}

#[test]
fn prdc_matches_the_prdc_package_exactly() {
    let f = load();
    let (n, m) = (f.expected.num_real as f64, f.expected.num_fake as f64);
    assert!(!f.expected.prdc.is_empty());
    for case in &f.expected.prdc {
        let got = metrics::prdc(&f.real, &f.fake, case.k).unwrap();
        let k = case.k as f64;
        // the fractions of the package, from its integer counts
        let expected = metrics::Prdc {
            precision: case.fakes_in_real_manifold as f64 / m,
            recall: case.reals_in_fake_manifold as f64 / n,
            density: (1.0 / k) * (case.fake_real_ball_pairs as f64 / m),
            coverage: case.real_balls_covered as f64 / n,
        };
        assert_eq!(got, expected, "k = {}", case.k);
        // the JSON floats say the same (to parsing precision)
        let parsed = [case.precision, case.recall, case.density, case.coverage];
        let ours = [got.precision, got.recall, got.density, got.coverage];
        for (a, b) in ours.iter().zip(parsed) {
            assert!(
                (a - b).abs() <= 1e-15,
                "k = {}: {ours:?} vs {parsed:?}",
                case.k
            );
        }
    }
}

#[test]
fn the_report_combines_the_reference_numbers() {
    let f = load();
    let e = &f.expected;
    let case = |k: usize| e.prdc.iter().find(|c| c.k == k).expect("k in fixture");
    let opts = Options {
        kid_subsets: 1,
        kid_subset_size: e.kid_one_subset_rows as usize,
        ..Options::default()
    };
    // KID on a subset of 250 real rows vs all 250 fake rows draws different
    // real rows than the fixture's first 250, so only FD and PRDC are exact.
    let report = metrics::compute(&f.real, &f.fake, &opts).unwrap();
    assert_close("report.fd", report.fd, e.fd);
    let (pr, dc) = (case(opts.pr_k), case(opts.dc_k));
    assert!((report.precision - pr.precision).abs() <= 1e-15);
    assert!((report.recall - pr.recall).abs() <= 1e-15);
    assert!((report.density - dc.density).abs() <= 1e-15);
    assert!((report.coverage - dc.coverage).abs() <= 1e-15);
    assert!(report.kid_mean > 0.0 && report.kid_std == 0.0);
}

#[test]
fn cuda_features_give_the_cpu_numbers() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    let f = load();
    let cuda = Device::Cuda(0);
    let (real, fake) = (f.real.to_device(cuda), f.fake.to_device(cuda));
    let opts = Options {
        kid_subsets: 5,
        kid_subset_size: 100,
        ..Options::default()
    };
    let on_cpu = metrics::compute(&f.real, &f.fake, &opts).unwrap();
    let on_cuda = metrics::compute(&real, &fake, &opts).unwrap();
    assert_close("fd (cuda)", on_cuda.fd, on_cpu.fd);
    assert_close("kid (cuda)", on_cuda.kid_mean, on_cpu.kid_mean);
    let prdc = |r: &metrics::Report| (r.precision, r.recall, r.density, r.coverage);
    assert_eq!(prdc(&on_cuda), prdc(&on_cpu));
}
