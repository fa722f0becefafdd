//! Precision, recall, density and coverage: fidelity and diversity measured
//! with k-nearest-neighbour balls, exactly as the authors' `prdc` package
//! (`compute_prdc`) defines them.
//!
//! Each real sample `r_i` gets a ball whose radius is the distance to its k-th
//! nearest other real sample; the union of these balls estimates the real
//! manifold. Fake samples `f_j` get balls the same way among the fakes.
//! Distances are Euclidean and comparisons strict (`d < radius`). With N real
//! and M fake samples:
//!
//! - precision (Kynkaanniemi et al. 2019, k = 3): the fraction of fakes inside
//!   some real ball, `1/M sum_j 1[exists i: |f_j - r_i| < rad_i]`;
//! - recall (same paper): the fraction of reals inside some fake ball,
//!   `1/N sum_i 1[exists j: |r_i - f_j| < rad_j]`;
//! - density (Naeem et al. 2020, k = 5): how many real balls a fake lies in,
//!   on average and over k, `1/(kM) sum_j sum_i 1[|f_j - r_i| < rad_i]`; about
//!   1 when fakes are distributed like reals, above 1 where they crowd into
//!   dense regions, and, unlike precision, not fooled by real outliers with
//!   huge balls;
//! - coverage (same paper): the fraction of real balls holding at least one
//!   fake, `1/N sum_i 1[min_j |r_i - f_j| < rad_i]`.
//!
//! Only `[block, N or M]` pieces of the distance matrices exist at a time
//! (blocks of 1024 rows), so sets of 10k samples need tens of MB, not GB.
//! They are computed in f64 on the features' device, and held squared,
//! `|a|^2 + |b|^2 - 2 a.b`: `d < radius` is tested as `d^2 < radius^2`, the
//! same test without a square root of every entry.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::{matrix, same_dim};
use crate::{Error, Result};

/// Default k of precision and recall (Kynkaanniemi et al. 2019).
pub const DEFAULT_PR_K: usize = 3;

/// Default k of density and coverage (Naeem et al. 2020).
pub const DEFAULT_DC_K: usize = 5;

/// Rows of a distance matrix computed at a time.
const CHUNK_ROWS: i64 = 1024;

/// The four k-nearest-neighbour metrics; all in `[0, 1]` except density.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prdc {
    /// Fraction of fake samples inside the real manifold.
    pub precision: f64,
    /// Fraction of real samples inside the fake manifold.
    pub recall: f64,
    /// Mean count of real balls holding a fake sample, over k.
    pub density: f64,
    /// Fraction of real balls holding a fake sample.
    pub coverage: f64,
}

/// Precision, recall, density and coverage of `fake` `[M, D]` against `real`
/// `[N, D]` with one k for all four, as `prdc.compute_prdc(real, fake, k)`.
/// Needs N, M > k >= 1.
pub fn prdc(real: &Tensor, fake: &Tensor, k: usize) -> Result<Prdc> {
    prdc_with_k(real, fake, k, k)
}

/// As [`prdc`], with the k of the papers for each pair: `pr_k` for precision
/// and recall (3), `dc_k` for density and coverage (5). Needs
/// N > max(pr_k, dc_k) and M > pr_k.
pub fn prdc_with_k(real: &Tensor, fake: &Tensor, pr_k: usize, dc_k: usize) -> Result<Prdc> {
    prdc_in_blocks(real, fake, pr_k, dc_k, CHUNK_ROWS)
}

/// Checks a neighbour count.
pub(crate) fn check_k(name: &'static str, k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::Parameter {
            name,
            value: "0".into(),
            expected: "1 or more nearest neighbours".into(),
        });
    }
    Ok(())
}

/// [`prdc_with_k`] with distance matrices computed `block` rows at a time
/// (a parameter so that the tests can check that blocks change nothing).
fn prdc_in_blocks(
    real: &Tensor,
    fake: &Tensor,
    pr_k: usize,
    dc_k: usize,
    block: i64,
) -> Result<Prdc> {
    check_k("pr_k", pr_k)?;
    check_k("dc_k", dc_k)?;
    let real_k = pr_k.max(dc_k);
    let real = matrix(
        real,
        "real features",
        real_k + 1,
        &format!("for k = {real_k}"),
    )?;
    let fake = matrix(fake, "fake features", pr_k + 1, &format!("for k = {pr_k}"))?;
    same_dim(&real, "real features", &fake, "fake features")?;
    let (n, m) = (real.size()[0], fake.size()[0]);
    let _span = tracing::debug_span!("prdc", n, m, pr_k, dc_k).entered();

    // Radii of the balls: distance to the k-th nearest neighbour. Radii and
    // distances from here on are squared.
    let real_radii = knn_squared_radii(&real, &[pr_k, dc_k], block)?;
    let (real_radius_pr, real_radius_dc) = (&real_radii[0], &real_radii[1]);
    let fake_radius = &knn_squared_radii(&fake, &[pr_k], block)?[0];

    // One pass over blocks of fakes, against all reals.
    let device = real.device();
    let real_sq = squared_norms(&real);
    let mut fakes_in_real_manifold = 0; // precision numerator
    let mut fake_real_ball_pairs = 0; // density numerator
    let mut real_in_fake_manifold = Tensor::zeros([n], (Kind::Bool, device)); // recall
    let mut nearest_fake = Tensor::full([n], f64::INFINITY, (Kind::Double, device)); // coverage
    for (i, fake_block) in fake.split(block, 0).iter().enumerate() {
        let start = i as i64 * block;
        let rows = fake_block.size()[0];
        // squared distances [rows, N]: fake j of the block against real i
        let d2 = squared_distances(fake_block, &real, &real_sq);
        let in_real_ball_pr = d2.lt_tensor(&real_radius_pr.unsqueeze(0));
        fakes_in_real_manifold += count(&in_real_ball_pr.any_dim(1, false))?;
        fake_real_ball_pairs += count(&d2.lt_tensor(&real_radius_dc.unsqueeze(0)))?;
        let block_radius = fake_radius.narrow(0, start, rows).unsqueeze(1);
        real_in_fake_manifold =
            real_in_fake_manifold.logical_or(&d2.lt_tensor(&block_radius).any_dim(0, false));
        nearest_fake = nearest_fake.minimum(&d2.amin(0, false));
    }

    // Written as the prdc package writes them, so that the f64 results agree
    // to the last bit: boolean means, and density as (1/k) * mean of counts.
    let (n, m) = (n as f64, m as f64);
    Ok(Prdc {
        precision: fakes_in_real_manifold as f64 / m,
        recall: count(&real_in_fake_manifold)? as f64 / n,
        density: (1.0 / dc_k as f64) * (fake_real_ball_pairs as f64 / m),
        coverage: count(&nearest_fake.lt_tensor(real_radius_dc))? as f64 / n,
    })
}

/// For each row of `x` `[N, D]` and each k of `ks` (all < N), the squared
/// distance to its k-th nearest other row: the (k+1)-th smallest of its
/// distances to all rows, itself (at 0) included, as the prdc package
/// computes it. Returns one `[N]` tensor per k.
fn knn_squared_radii(x: &Tensor, ks: &[usize], block: i64) -> Result<Vec<Tensor>> {
    let k_max = ks.iter().copied().max().unwrap_or(0) as i64;
    let sq = squared_norms(x);
    let mut radii: Vec<Vec<Tensor>> = ks.iter().map(|_| Vec::new()).collect();
    for (i, rows) in x.split(block, 0).iter().enumerate() {
        let d2 = squared_distances(rows, x, &sq);
        // A row's distance to itself is 0 exactly, not round-off.
        let _ = d2.diagonal(i as i64 * block, 0, 1).fill_(0.0);
        let (smallest, _) = d2.f_topk(k_max + 1, 1, false, true)?;
        for (r, &k) in radii.iter_mut().zip(ks) {
            r.push(smallest.select(1, k as i64));
        }
    }
    Ok(radii.iter().map(|r| Tensor::cat(r, 0)).collect())
}

/// `|a_i|^2` of each row of `a` `[N, D]`.
fn squared_norms(a: &Tensor) -> Tensor {
    a.square().sum_dim_intlist(1, false, Kind::Double)
}

/// Squared Euclidean distances `[rows of a, rows of b]` from the expansion
/// `|a|^2 + |b|^2 - 2 a.b`, clamped at 0 against round-off; `b_sq` holds the
/// `|b|^2`. Built in place: these are the largest tensors of PRDC.
fn squared_distances(a: &Tensor, b: &Tensor, b_sq: &Tensor) -> Tensor {
    let mut d = a.matmul(&b.transpose(0, 1));
    let _ = d.g_mul_scalar_(-2.0);
    let _ = d.g_add_(&squared_norms(a).unsqueeze(1));
    let _ = d.g_add_(&b_sq.unsqueeze(0));
    let _ = d.clamp_min_(0.0);
    d
}

/// The number of true elements of a boolean tensor.
fn count(t: &Tensor) -> Result<i64> {
    Ok(i64::try_from(t.sum(Kind::Int64).to_device(Device::Cpu))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(n: i64, d: i64) -> Tensor {
        Tensor::randn([n, d], (Kind::Float, Device::Cpu))
    }

    fn column(values: &[f64]) -> Tensor {
        Tensor::from_slice(values).unsqueeze(1)
    }

    #[test]
    fn a_hand_computed_example_on_a_line() {
        // k = 1: real radii 1, 1, 2, 3, 1, 1; fake radii 4, 4, 5.5.
        let real = column(&[0.0, 1.0, 3.0, 6.0, 20.0, 21.0]);
        let fake = column(&[0.5, 4.5, 10.0]);
        let expected = Prdc {
            // 0.5 is in the balls of 0 and 1, 4.5 in those of 3 and 6, 10 in none
            precision: 2.0 / 3.0,
            // 0, 1, 3 lie in the ball of 0.5, 6 in that of 4.5; 20, 21 in none
            recall: 4.0 / 6.0,
            // 2 + 2 + 0 (fake, real ball) pairs over k M = 3
            density: 4.0 / 3.0,
            // the balls of 0, 1, 3, 6 hold a fake; those of 20 and 21 not
            coverage: 4.0 / 6.0,
        };
        assert_eq!(prdc(&real, &fake, 1).unwrap(), expected);
        // and in blocks of 2 rows, with the self-distances off the main diagonal
        assert_eq!(prdc_in_blocks(&real, &fake, 1, 1, 2).unwrap(), expected);
    }

    #[test]
    fn a_sample_on_the_boundary_of_a_ball_is_outside() {
        // Real radii (k = 1) are all 1; the fake at 3 is exactly 1 from the
        // real 2 (distances of small integers are exact). Fake radii: 1.
        let real = column(&[0.0, 1.0, 2.0]);
        let fake = column(&[3.0, 4.0]);
        let p = prdc(&real, &fake, 1).unwrap();
        let zero = Prdc {
            precision: 0.0,
            recall: 0.0,
            density: 0.0,
            coverage: 0.0,
        };
        assert_eq!(p, zero);
    }

    #[test]
    fn blocks_do_not_change_the_result() {
        tch::manual_seed(7);
        let (real, fake) = (randn(230, 6), randn(170, 6) * 1.2 + 0.3);
        let whole = prdc_with_k(&real, &fake, 3, 5).unwrap();
        for block in [1, 7, 64, 229] {
            assert_eq!(
                prdc_in_blocks(&real, &fake, 3, 5, block).unwrap(),
                whole,
                "{block}"
            );
        }
        assert!(whole.precision > 0.2 && whole.precision < 1.0, "{whole:?}");
    }

    #[test]
    fn separate_k_equals_one_k_per_pair() {
        tch::manual_seed(8);
        let (real, fake) = (randn(100, 4), randn(90, 4) + 0.4);
        let both = prdc_with_k(&real, &fake, 3, 5).unwrap();
        let (k3, k5) = (
            prdc(&real, &fake, 3).unwrap(),
            prdc(&real, &fake, 5).unwrap(),
        );
        assert_eq!((both.precision, both.recall), (k3.precision, k3.recall));
        assert_eq!((both.density, both.coverage), (k5.density, k5.coverage));
    }

    #[test]
    fn identical_sets_are_fully_precise_and_covered() {
        tch::manual_seed(9);
        let x = randn(300, 8);
        let p = prdc_with_k(&x, &x, 3, 5).unwrap();
        assert_eq!(
            (p.precision, p.recall, p.coverage),
            (1.0, 1.0, 1.0),
            "{p:?}"
        );
        // every fake is at least in its own real ball
        assert!(p.density >= 1.0 / 5.0, "{p:?}");
    }

    #[test]
    fn far_apart_sets_score_zero() {
        tch::manual_seed(10);
        let p = prdc_with_k(&randn(200, 8), &(randn(150, 8) + 100.0), 3, 5).unwrap();
        let zero = Prdc {
            precision: 0.0,
            recall: 0.0,
            density: 0.0,
            coverage: 0.0,
        };
        assert_eq!(p, zero);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = randn(6, 2);
        assert!(matches!(
            prdc(&x, &x, 0),
            Err(Error::Parameter { name: "pr_k", .. })
        ));
        assert!(matches!(
            prdc_with_k(&x, &x, 3, 0),
            Err(Error::Parameter { name: "dc_k", .. })
        ));
        // k must be below the number of samples of each set
        let msg = prdc(&x, &x, 6).unwrap_err().to_string();
        assert!(msg.contains("at least 7 rows"), "{msg}");
        assert!(prdc(&x, &x.narrow(0, 0, 3), 3).is_err());
        assert!(prdc(&x, &x.narrow(0, 0, 4), 3).is_ok());
        assert!(matches!(prdc(&x, &randn(6, 3), 1), Err(Error::Features(_))));
    }
}
