//! KID, the kernel inception distance (Binkowski et al. 2018, "Demystifying
//! MMD GANs"), on whatever features are given.
//!
//! It is the squared maximum mean discrepancy between the two distributions
//! under the cubic polynomial kernel `k(x, y) = (x.y / D + 1)^3`, estimated
//! without bias from samples X (m rows) and Y (n rows):
//!
//! ```text
//! MMD^2_u = 1/(m(m-1)) sum_{i != j} k(x_i, x_j)
//!         + 1/(n(n-1)) sum_{i != j} k(y_i, y_j)
//!         - 2/(mn)     sum_{i, j}   k(x_i, y_j).
//! ```
//!
//! Leaving out the diagonal makes the estimate unbiased, so it is about 0, and
//! can be slightly negative, for two samples of one distribution. As in the
//! paper, torch-fidelity and clean-fid, [`kid`] averages it over `num_subsets`
//! random subsets of `subset_size` rows of each set (drawn without replacement
//! within a subset; the size is capped at both set sizes) and reports the
//! mean and the standard deviation over subsets (`np.std`, divided by the
//! number of subsets, as torch-fidelity). The subsets come from a SplitMix64
//! generator seeded by the caller, so a seed gives the same KID on every run
//! and machine. [`mmd2_unbiased`] is the estimate on all pairs of two sets.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::{matrix, same_dim};
use crate::{Error, Result};

/// Default number of subsets (100, as torch-fidelity and clean-fid).
pub const DEFAULT_SUBSETS: usize = 100;

/// Default subset size (1000, as torch-fidelity and clean-fid).
pub const DEFAULT_SUBSET_SIZE: usize = 1000;

/// Rows of the kernel matrix computed at a time by [`mmd2_unbiased`].
const CHUNK_ROWS: i64 = 1024;

/// KID over subsets: the mean of the per-subset MMD^2 estimates and their
/// standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Kid {
    /// Mean of the subset estimates (the KID).
    pub mean: f64,
    /// Standard deviation of the subset estimates (population, ddof = 0).
    pub std: f64,
}

/// KID between `real` `[N, D]` and `fake` `[M, D]`: the unbiased MMD^2
/// averaged over `num_subsets` subsets of `min(subset_size, N, M)` rows of
/// each set, drawn with `seed`. N, M >= 2.
pub fn kid(
    real: &Tensor,
    fake: &Tensor,
    num_subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    check_subsets(num_subsets, subset_size)?;
    let x = matrix(real, "real features", 2, "for KID")?;
    let y = matrix(fake, "fake features", 2, "for KID")?;
    same_dim(&x, "real features", &y, "fake features")?;
    let (n_real, n_fake) = (x.size()[0] as usize, y.size()[0] as usize);
    let m = subset_size.min(n_real).min(n_fake);
    let _span = tracing::debug_span!("kid", num_subsets, subset_size = m).entered();

    let mut rng = SplitMix64(seed);
    let mut estimates = Vec::with_capacity(num_subsets);
    for _ in 0..num_subsets {
        let real_rows = rng.choose(n_real, m);
        let fake_rows = rng.choose(n_fake, m);
        let index = |rows: Vec<i64>| Tensor::from_slice(&rows).to_device(x.device());
        estimates.push(mmd2(
            &x.index_select(0, &index(real_rows)),
            &y.index_select(0, &index(fake_rows)),
        )?);
    }
    let count = estimates.len() as f64;
    let mean = estimates.iter().sum::<f64>() / count;
    let variance = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / count;
    Ok(Kid {
        mean,
        std: variance.sqrt(),
    })
}

/// The unbiased MMD^2 with the cubic polynomial kernel on all pairs of
/// `real` `[N, D]` and `fake` `[M, D]` (N and M may differ; both >= 2). The
/// kernel matrices are summed a block of rows at a time.
pub fn mmd2_unbiased(real: &Tensor, fake: &Tensor) -> Result<f64> {
    let x = matrix(real, "real features", 2, "for MMD")?;
    let y = matrix(fake, "fake features", 2, "for MMD")?;
    same_dim(&x, "real features", &y, "fake features")?;
    mmd2(&x, &y)
}

/// Checks the subset parameters of [`kid`].
pub(crate) fn check_subsets(num_subsets: usize, subset_size: usize) -> Result<()> {
    if num_subsets == 0 {
        return Err(Error::Parameter {
            name: "kid_subsets",
            value: "0".into(),
            expected: "1 or more subsets".into(),
        });
    }
    if subset_size < 2 {
        return Err(Error::Parameter {
            name: "kid_subset_size",
            value: subset_size.to_string(),
            expected: "2 or more rows (the unbiased estimate divides by size - 1)".into(),
        });
    }
    Ok(())
}

/// MMD^2_u of two validated f64 matrices of one dimension, >= 2 rows each.
fn mmd2(x: &Tensor, y: &Tensor) -> Result<f64> {
    let d = x.size()[1] as f64;
    let (m, n) = (x.size()[0] as f64, y.size()[0] as f64);
    let xx = kernel_sum(x, x, d)? - kernel_diagonal_sum(x, d)?;
    let yy = kernel_sum(y, y, d)? - kernel_diagonal_sum(y, d)?;
    let xy = kernel_sum(x, y, d)?;
    Ok(xx / (m * (m - 1.0)) + yy / (n * (n - 1.0)) - 2.0 * xy / (m * n))
}

/// `sum_{i, j} k(a_i, b_j)`, a block of rows of `a` at a time.
fn kernel_sum(a: &Tensor, b: &Tensor, d: f64) -> Result<f64> {
    let bt = b.transpose(0, 1);
    let mut sum = 0.0;
    for block in a.split(CHUNK_ROWS, 0) {
        let k = (block.matmul(&bt) / d + 1.0).pow_tensor_scalar(3);
        sum += f64::try_from(k.sum(Kind::Double))?;
    }
    Ok(sum)
}

/// `sum_i k(a_i, a_i)`, the diagonal left out of the unbiased estimate.
fn kernel_diagonal_sum(a: &Tensor, d: f64) -> Result<f64> {
    let k = (a.square().sum_dim_intlist(1, false, Kind::Double) / d + 1.0).pow_tensor_scalar(3);
    Ok(f64::try_from(k.sum(Kind::Double))?)
}

/// SplitMix64 (Steele, Lea & Flood 2014): small, fast and defined here, so
/// that the subsets of a seed never change with a dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n), n > 0, without modulo bias (Lemire's method).
    fn below(&mut self, n: u64) -> u64 {
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// `m` distinct indices of 0..n, m <= n, uniformly at random (the first m
    /// steps of a Fisher-Yates shuffle).
    fn choose(&mut self, n: usize, m: usize) -> Vec<i64> {
        let mut rows: Vec<i64> = (0..n as i64).collect();
        for i in 0..m {
            let j = i + self.below((n - i) as u64) as usize;
            rows.swap(i, j);
        }
        rows.truncate(m);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn randn(n: i64, d: i64) -> Tensor {
        Tensor::randn([n, d], (Kind::Float, Device::Cpu))
    }

    /// MMD^2_u written out with loops over plain vectors.
    fn naive_mmd2(x: &Tensor, y: &Tensor) -> f64 {
        let x = Vec::<Vec<f64>>::try_from(x.to_kind(Kind::Double)).unwrap();
        let y = Vec::<Vec<f64>>::try_from(y.to_kind(Kind::Double)).unwrap();
        let d = x[0].len() as f64;
        let k = |a: &[f64], b: &[f64]| {
            (a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / d + 1.0).powi(3)
        };
        let (m, n) = (x.len() as f64, y.len() as f64);
        let mut xx = 0.0;
        for (i, a) in x.iter().enumerate() {
            for (j, b) in x.iter().enumerate() {
                if i != j {
                    xx += k(a, b);
                }
            }
        }
        let mut yy = 0.0;
        for (i, a) in y.iter().enumerate() {
            for (j, b) in y.iter().enumerate() {
                if i != j {
                    yy += k(a, b);
                }
            }
        }
        let xy: f64 = x.iter().flat_map(|a| y.iter().map(|b| k(a, b))).sum();
        xx / (m * (m - 1.0)) + yy / (n * (n - 1.0)) - 2.0 * xy / (m * n)
    }

    #[test]
    fn mmd2_matches_the_definition() {
        tch::manual_seed(3);
        // 1500 rows, so that the kernel sums span two blocks
        let (x, y) = (randn(1500, 4), randn(40, 4) * 2.0);
        let expected = naive_mmd2(&x, &y);
        let got = mmd2_unbiased(&x, &y).unwrap();
        assert!(
            (got - expected).abs() <= 1e-10 * expected.abs(),
            "{got} vs {expected}"
        );
    }

    #[test]
    fn kid_is_about_zero_for_one_distribution_and_positive_for_a_shift() {
        tch::manual_seed(4);
        let (x, y) = (randn(2000, 16), randn(2000, 16));
        let same = kid(&x, &y, 50, 500, 7).unwrap();
        // The mean of 50 estimates lies within a few standard errors of 0.
        assert!(same.std > 0.0);
        assert!(same.mean.abs() < 4.0 * same.std / 50f64.sqrt(), "{same:?}");
        let shifted = kid(&x, &(y + 0.5), 50, 500, 7).unwrap();
        assert!(shifted.mean > 10.0 * same.std, "{shifted:?} vs {same:?}");
    }

    #[test]
    fn kid_is_deterministic_in_the_seed() {
        tch::manual_seed(5);
        let (x, y) = (randn(300, 8), randn(200, 8) + 0.1);
        let a = kid(&x, &y, 10, 100, 42).unwrap();
        assert_eq!(a, kid(&x, &y, 10, 100, 42).unwrap());
        assert_ne!(a, kid(&x, &y, 10, 100, 43).unwrap());
        // f32 and f64 features give the same numbers up to the f32 rounding
        // of the features themselves (here exact: they are f32 values).
        assert_eq!(a, kid(&x.to_kind(Kind::Double), &y, 10, 100, 42).unwrap());
    }

    #[test]
    fn a_subset_of_all_rows_is_the_full_estimate() {
        tch::manual_seed(6);
        let (x, y) = (randn(60, 5), randn(60, 5) * 1.3);
        let full = mmd2_unbiased(&x, &y).unwrap();
        // subset_size is capped at 60: every subset is a permutation of all
        for size in [60, 1000] {
            let k = kid(&x, &y, 3, size, 0).unwrap();
            assert!(
                (k.mean - full).abs() <= 1e-12 * full.abs(),
                "{k:?} vs {full}"
            );
            assert!(k.std <= 1e-12 * full.abs(), "{k:?}");
        }
    }

    #[test]
    fn choose_draws_distinct_rows_uniformly() {
        let mut rng = SplitMix64(9);
        let mut counts = [0usize; 10];
        for _ in 0..10_000 {
            let mut rows = rng.choose(10, 3);
            for &r in &rows {
                counts[r as usize] += 1;
            }
            rows.sort_unstable();
            rows.dedup();
            assert_eq!(rows.len(), 3);
        }
        // each row is drawn 3000 times in expectation (sd about 46)
        assert!(
            counts.iter().all(|&c| (2800..3200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = randn(10, 3);
        assert!(matches!(
            kid(&x, &x, 0, 10, 0),
            Err(Error::Parameter { .. })
        ));
        assert!(matches!(
            kid(&x, &x, 10, 1, 0),
            Err(Error::Parameter { .. })
        ));
        assert!(matches!(
            kid(&x, &randn(10, 4), 1, 10, 0),
            Err(Error::Features(_))
        ));
        assert!(matches!(
            kid(&x, &randn(1, 3), 1, 10, 0),
            Err(Error::Features(_))
        ));
        assert!(matches!(
            mmd2_unbiased(&x.flatten(0, 1), &x),
            Err(Error::Features(_))
        ));
    }
}
