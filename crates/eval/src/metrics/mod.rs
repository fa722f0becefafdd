//! Sample-quality metrics on two feature matrices: `real` `[N, D]` (features of
//! data) and `fake` `[M, D]` (features of generated samples), any float kind on
//! any device. Every function returns plain `f64` numbers computed in f64:
//! the matrix square roots of FD on the CPU, the kernel and distance
//! matrices of KID and PRDC on the features' device.
//!
//! - [`frechet`]: the Frechet distance between Gaussians fitted to the two
//!   sets, `|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r^1/2 S_f S_r^1/2)^1/2)`
//!   (Dowson & Landau 1982; as FID in Heusel et al. 2017, "GANs Trained by a
//!   Two Time-Scale Update Rule Converge to a Local Nash Equilibrium"). Lower
//!   is better; 0 for equal mean and covariance. The real [`Gaussian`] can be
//!   cached in a safetensors file.
//! - [`kid`](mod@kid): the kernel inception distance, the unbiased squared
//!   MMD with the cubic polynomial kernel `k(x, y) = (x.y / D + 1)^3`,
//!   averaged over random subsets (Binkowski et al. 2018, "Demystifying MMD
//!   GANs"). Unbiased, so near 0 (possibly below) for samples of the same
//!   distribution.
//! - [`prdc`](mod@prdc): precision and recall (Kynkaanniemi et al. 2019,
//!   "Improved Precision and Recall Metric for Assessing Generative Models"):
//!   the fraction of fake samples inside the k-nearest-neighbour balls of the
//!   real ones (fidelity), and of real samples inside the balls of the fake
//!   ones (diversity); density and coverage (Naeem et al. 2020, "Reliable
//!   Fidelity and Diversity Metrics for Generative Models"): how many real
//!   balls a fake sample falls in on average, divided by k, and the fraction
//!   of real balls that hold at least one fake sample. All four are exactly
//!   those of the authors' `prdc` package.
//!
//! [`compute`] runs them all into a [`Report`]:
//!
//! ```
//! use eval::metrics::{compute, Options};
//! use tch::{Device, Kind, Tensor};
//!
//! tch::manual_seed(0);
//! let real = Tensor::randn([200, 8], (Kind::Float, Device::Cpu));
//! let fake = Tensor::randn([150, 8], (Kind::Float, Device::Cpu)) + 3.0;
//! let opts = Options {
//!     kid_subsets: 10,
//!     kid_subset_size: 100,
//!     ..Options::default()
//! };
//! let report = compute(&real, &fake, &opts).unwrap();
//! // A shift by 3 in each of 8 dimensions: the means alone are 72 apart.
//! assert!(report.fd > 60.0 && report.kid_mean > 0.0);
//! assert!(report.precision < 0.05 && report.coverage < 0.05);
//! ```

pub mod frechet;
pub mod kid;
pub mod prdc;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{Error, Result};

pub use frechet::{fd, frechet_distance, Gaussian};
pub use kid::{kid, mmd2_unbiased, Kid};
pub use prdc::{prdc, prdc_with_k, Prdc};

/// The parameters of [`compute`]; the defaults are those of the papers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Number of random subsets KID is averaged over (100).
    pub kid_subsets: usize,
    /// Size of each KID subset (1000), capped at the size of both sets.
    pub kid_subset_size: usize,
    /// Neighbour count k of precision and recall (3, Kynkaanniemi et al.).
    pub pr_k: usize,
    /// Neighbour count k of density and coverage (5, Naeem et al.).
    pub dc_k: usize,
    /// Seed of the KID subset draws.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kid_subsets: kid::DEFAULT_SUBSETS,
            kid_subset_size: kid::DEFAULT_SUBSET_SIZE,
            pr_k: prdc::DEFAULT_PR_K,
            dc_k: prdc::DEFAULT_DC_K,
            seed: 0,
        }
    }
}

impl Options {
    /// Checks the parameters that do not depend on the data.
    pub fn validate(&self) -> Result<()> {
        kid::check_subsets(self.kid_subsets, self.kid_subset_size)?;
        prdc::check_k("pr_k", self.pr_k)?;
        prdc::check_k("dc_k", self.dc_k)
    }
}

/// Every metric of one real/fake comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Frechet distance (lower is better).
    pub fd: f64,
    /// KID, mean over subsets (lower is better).
    pub kid_mean: f64,
    /// KID, standard deviation over subsets.
    pub kid_std: f64,
    /// Fraction of fake samples within the real manifold (fidelity).
    pub precision: f64,
    /// Fraction of real samples within the fake manifold (diversity).
    pub recall: f64,
    /// Mean number of real balls holding a fake sample, over k (fidelity; can
    /// exceed 1).
    pub density: f64,
    /// Fraction of real balls holding a fake sample (diversity).
    pub coverage: f64,
}

/// Computes every metric between `real` `[N, D]` and `fake` `[M, D]`.
pub fn compute(real: &Tensor, fake: &Tensor, opts: &Options) -> Result<Report> {
    opts.validate()?;
    let real_gaussian = Gaussian::of(real)?;
    compute_with_gaussian(&real_gaussian, real, fake, opts)
}

/// As [`compute`], with the Gaussian of the real features given (cached, say,
/// so that their covariance is not recomputed). `real` is still needed for
/// KID and PRDC; `real_gaussian` may come from a larger set than `real`.
pub fn compute_with_gaussian(
    real_gaussian: &Gaussian,
    real: &Tensor,
    fake: &Tensor,
    opts: &Options,
) -> Result<Report> {
    opts.validate()?;
    // Shapes first, so that a mismatch is reported before any work.
    let real = matrix(real, "real features", 2, "for KID")?;
    let fake = matrix(fake, "fake features", 2, "for a covariance")?;
    same_dim(&real, "real features", &fake, "fake features")?;
    let d = real.size()[1] as usize;
    if real_gaussian.dim() != d {
        return Err(Error::Features(format!(
            "the real Gaussian has D = {} but the features have D = {d}",
            real_gaussian.dim()
        )));
    }
    let _span = tracing::debug_span!("metrics", d).entered();
    let fd = frechet_distance(real_gaussian, &Gaussian::of(&fake)?)?;
    tracing::debug!(fd, "frechet distance");
    let (subsets, size) = (opts.kid_subsets, opts.kid_subset_size);
    let Kid { mean, std } = kid(&real, &fake, subsets, size, opts.seed)?;
    tracing::debug!(mean, std, "kid");
    let p = prdc_with_k(&real, &fake, opts.pr_k, opts.dc_k)?;
    tracing::debug!(?p, "prdc");
    Ok(Report {
        fd,
        kid_mean: mean,
        kid_std: std,
        precision: p.precision,
        recall: p.recall,
        density: p.density,
        coverage: p.coverage,
    })
}

/// Checks that `features` is a `[N, D]` matrix of finite floats with
/// `N >= min_rows` and `D >= 1`, and returns it as f64 on its device.
/// `what` names the set in messages ("real features"), `why` the reason for
/// `min_rows` ("for a covariance").
pub(crate) fn matrix(features: &Tensor, what: &str, min_rows: usize, why: &str) -> Result<Tensor> {
    let size = features.size();
    let &[n, d] = size.as_slice() else {
        return Err(Error::Features(format!(
            "{what}: expected a [N, D] matrix, got shape {size:?}"
        )));
    };
    if !features.is_floating_point() {
        return Err(Error::Features(format!(
            "{what}: expected floating-point values, got {:?}",
            features.kind()
        )));
    }
    if (n as usize) < min_rows {
        return Err(Error::Features(format!(
            "{what}: need at least {min_rows} rows {why}, got {n}"
        )));
    }
    if d == 0 {
        return Err(Error::Features(format!(
            "{what}: shape {size:?} has no feature dimension"
        )));
    }
    let x = features.to_kind(Kind::Double);
    if !bool::try_from(x.isfinite().all())? {
        return Err(Error::Features(format!(
            "{what}: contains NaN or infinite values"
        )));
    }
    Ok(x)
}

/// Checks that two feature sets have the same dimension D.
pub(crate) fn same_dim(a: &Tensor, a_what: &str, b: &Tensor, b_what: &str) -> Result<()> {
    let (da, db) = (a.size()[1], b.size()[1]);
    if da != db {
        return Err(Error::Features(format!(
            "{a_what} have D = {da} but {b_what} have D = {db}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn randn(n: i64, d: i64) -> Tensor {
        Tensor::randn([n, d], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn matrix_rejects_bad_shapes_kinds_and_values() {
        let err = |t: &Tensor| matrix(t, "real features", 2, "for a covariance").unwrap_err();
        let msg = err(&Tensor::zeros([4], (Kind::Float, Device::Cpu))).to_string();
        assert!(msg.contains("[N, D]"), "{msg}");
        let msg = err(&Tensor::zeros([4, 2], (Kind::Int64, Device::Cpu))).to_string();
        assert!(msg.contains("floating-point"), "{msg}");
        let msg = err(&randn(1, 3)).to_string();
        assert!(msg.contains("at least 2 rows"), "{msg}");
        let msg = err(&randn(4, 0)).to_string();
        assert!(msg.contains("no feature dimension"), "{msg}");
        let nan = randn(4, 3);
        let _ = nan.get(2).get(1).fill_(f64::NAN);
        let msg = err(&nan).to_string();
        assert!(msg.contains("NaN"), "{msg}");
        let x = matrix(&randn(4, 3), "x", 2, "").unwrap();
        assert_eq!((x.kind(), x.size()), (Kind::Double, vec![4, 3]));
    }

    #[test]
    fn options_validate_rejects_zero_parameters() {
        assert!(Options::default().validate().is_ok());
        for opts in [
            Options {
                pr_k: 0,
                ..Options::default()
            },
            Options {
                dc_k: 0,
                ..Options::default()
            },
            Options {
                kid_subsets: 0,
                ..Options::default()
            },
            Options {
                kid_subset_size: 1,
                ..Options::default()
            },
        ] {
            assert!(
                matches!(opts.validate(), Err(Error::Parameter { .. })),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn compute_agrees_with_the_single_metrics_and_the_cached_gaussian() {
        tch::manual_seed(1);
        let real = randn(120, 6);
        let fake = randn(100, 6) * 1.5 + 0.5;
        let opts = Options {
            kid_subsets: 5,
            kid_subset_size: 50,
            ..Options::default()
        };
        let report = compute(&real, &fake, &opts).unwrap();
        assert_eq!(report.fd, fd(&real, &fake).unwrap());
        let k = kid(&real, &fake, 5, 50, 0).unwrap();
        assert_eq!((report.kid_mean, report.kid_std), (k.mean, k.std));
        let p = prdc_with_k(&real, &fake, 3, 5).unwrap();
        assert_eq!(
            (
                report.precision,
                report.recall,
                report.density,
                report.coverage
            ),
            (p.precision, p.recall, p.density, p.coverage)
        );
        let cached = compute_with_gaussian(&Gaussian::of(&real).unwrap(), &real, &fake, &opts);
        assert_eq!(cached.unwrap(), report);
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn compute_rejects_mismatched_dimensions() {
        let msg = compute(&randn(20, 4), &randn(20, 5), &Options::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("D = 4") && msg.contains("D = 5"), "{msg}");
        let g = Gaussian::of(&randn(20, 3)).unwrap();
        let msg = compute_with_gaussian(&g, &randn(20, 4), &randn(20, 4), &Options::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("real Gaussian has D = 3"), "{msg}");
    }
}
