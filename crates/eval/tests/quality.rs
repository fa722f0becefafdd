//! The metrics on real images and the bundled digits feature net: a set
//! against itself, two halves of one set, and degradations of growing
//! strength.

use data_pipeline::source::SourceSpec;
use eval::images::Degrade;
use eval::metrics::{self, Options};
use eval::{Extractor, Reference};
use tch::{Device, Tensor};

/// Two disjoint quarters of the bundled digits (indices 0, 4, 8, ... as the
/// reference and 1, 5, 9, ... as "samples"), 1250 images each, every class.
fn halves() -> (Tensor, Tensor) {
    let all = eval::images::from_spec(&SourceSpec::Digits, None, 28, 1).unwrap();
    let n = all.size()[0];
    let every4 = |start| Tensor::arange_start_step(start, n, 4, (tch::Kind::Int64, Device::Cpu));
    (
        all.index_select(0, &every4(0)),
        all.index_select(0, &every4(1)),
    )
}

fn opts() -> Options {
    Options {
        kid_subsets: 10,
        kid_subset_size: 500,
        ..Options::default()
    }
}

#[test]
fn fd_of_a_set_with_itself_is_zero_and_two_halves_are_close() {
    let ex = Extractor::open("digits", Device::Cpu, Default::default()).unwrap();
    let (a, b) = halves();
    let fa = ex.features(&a, 500).unwrap();
    let fb = ex.features(&b, 500).unwrap();
    let same = metrics::fd(&fa, &fa).unwrap();
    assert!(
        same.abs() < 1e-6 * metrics::fd(&fa, &(&fa * 2.0)).unwrap(),
        "FD(a, a) = {same}"
    );
    let reference = Reference::from_features("digits[0::4]", fa).unwrap();
    let r = reference.compare(&fb, &opts()).unwrap();
    // Unbiased KID: two halves of one distribution give a mean near 0,
    // within a few standard deviations of the subset estimates.
    assert!(r.kid_mean.abs() < 3.0 * r.kid_std.max(1e-4), "{r:?}");
    assert!(r.precision > 0.6 && r.recall > 0.6, "{r:?}");
}

#[test]
fn fd_and_kid_grow_with_noise_and_blur() {
    let ex = Extractor::open("digits", Device::Cpu, Default::default()).unwrap();
    let (a, b) = halves();
    let reference =
        Reference::from_features("digits[0::4]", ex.features(&a, 500).unwrap()).unwrap();
    for family in [
        [0.0, 0.05, 0.15, 0.4].map(Degrade::Noise),
        [0.0, 0.6, 1.0, 2.0].map(Degrade::Blur),
    ] {
        let mut last: Option<(f64, f64)> = None;
        for d in family {
            let images = d.apply(&b, 7);
            let r = reference.evaluate(&ex, &images, &opts()).unwrap();
            if let Some((fd, kid)) = last {
                assert!(r.fd > fd, "{d}: FD {} not above {fd}", r.fd);
                assert!(r.kid_mean > kid, "{d}: KID {} not above {kid}", r.kid_mean);
            }
            last = Some((r.fd, r.kid_mean));
        }
    }
}

#[test]
fn references_are_cached_by_data_and_net() {
    let cache = tempfile::tempdir().unwrap();
    let ex = Extractor::open("digits", Device::Cpu, Default::default()).unwrap();
    let first = Reference::load_or_compute(&SourceSpec::Digits, Some(300), &ex, Some(cache.path()))
        .unwrap();
    let file = first.cache_file.clone().expect("cached");
    assert!(file.starts_with(cache.path()), "{}", file.display());
    let again = Reference::load_or_compute(&SourceSpec::Digits, Some(300), &ex, Some(cache.path()))
        .unwrap();
    assert!(again.features.equal(&first.features));
    assert_eq!(again.len(), 300);
    // Another limit is another file.
    let other = eval::reference::cache_file(cache.path(), &SourceSpec::Digits, Some(200), &ex);
    assert_ne!(other, file);
}
