//! The Frechet distance between two feature sets: fit a Gaussian to each
//! (mean and unbiased covariance) and take the Frechet (2-Wasserstein)
//! distance between the Gaussians (Dowson & Landau 1982),
//!
//! ```text
//! FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^1/2 S_2 S_1^1/2)^1/2).
//! ```
//!
//! This is FID (Heusel et al. 2017) on whatever features are given. The
//! middle term equals `tr((S_1 S_2)^1/2)` of the usual formula, but is a square
//! root of a symmetric positive semi-definite matrix, so both roots come from
//! a symmetric eigendecomposition (`linalg_eigh`) in f64 on the CPU, with the
//! tiny negative eigenvalues of round-off clamped to 0. No complex parts to
//! discard, as with `scipy.linalg.sqrtm`.

use tch::{Device, Kind, Tensor};

use super::{matrix, same_dim};
use crate::{Error, Result};
use tensor::safetensors::NamedTensors;

/// A Gaussian fitted to N feature vectors of dimension D: mean `[D]` and
/// unbiased covariance `[D, D]` (divided by N - 1), both f64 on the CPU.
#[derive(Debug)]
pub struct Gaussian {
    mean: Tensor,
    cov: Tensor,
    n: usize,
}

impl Clone for Gaussian {
    fn clone(&self) -> Self {
        Gaussian {
            mean: self.mean.copy(),
            cov: self.cov.copy(),
            n: self.n,
        }
    }
}

impl Gaussian {
    /// Fits a Gaussian to `features` `[N, D]`, N >= 2.
    pub fn of(features: &Tensor) -> Result<Self> {
        let x = matrix(features, "features", 2, "for a covariance")?;
        let n = x.size()[0];
        let mean = x.mean_dim(0, false, Kind::Double);
        let centered = &x - &mean;
        let cov = centered.transpose(0, 1).matmul(&centered) / (n - 1) as f64;
        Ok(Gaussian {
            mean: mean.to_device(Device::Cpu),
            cov: symmetric_part(&cov).to_device(Device::Cpu),
            n: n as usize,
        })
    }

    /// A Gaussian from its mean `[D]`, covariance `[D, D]` and sample count
    /// (kept for the record; 2 or more). The covariance is used as given,
    /// symmetrised.
    pub fn new(mean: &Tensor, cov: &Tensor, n: usize) -> Result<Self> {
        let d = match mean.size().as_slice() {
            &[d] if d > 0 => d,
            size => {
                return Err(Error::Features(format!(
                    "Gaussian mean: expected a [D] vector, got shape {size:?}"
                )))
            }
        };
        if cov.size() != [d, d] {
            return Err(Error::Features(format!(
                "Gaussian covariance: expected shape [{d}, {d}] to fit the mean, got {:?}",
                cov.size()
            )));
        }
        if n < 2 {
            return Err(Error::Parameter {
                name: "n",
                value: n.to_string(),
                expected: "a Gaussian is fitted to 2 or more samples".into(),
            });
        }
        let cpu = |t: &Tensor, what: &str| -> Result<Tensor> {
            if !t.is_floating_point() {
                return Err(Error::Features(format!(
                    "Gaussian {what}: expected floating-point values, got {:?}",
                    t.kind()
                )));
            }
            let t = t.to_device(Device::Cpu).to_kind(Kind::Double);
            if !bool::try_from(t.isfinite().all())? {
                return Err(Error::Features(format!(
                    "Gaussian {what}: contains NaN or infinite values"
                )));
            }
            Ok(t)
        };
        let cov = cpu(cov, "covariance")?;
        Ok(Gaussian {
            mean: cpu(mean, "mean")?,
            cov: symmetric_part(&cov),
            n,
        })
    }

    /// The mean, f64 `[D]` on the CPU.
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// The covariance, f64 `[D, D]` on the CPU.
    pub fn cov(&self) -> &Tensor {
        &self.cov
    }

    /// The number of samples the Gaussian was fitted to.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The feature dimension D.
    pub fn dim(&self) -> usize {
        self.mean.size()[0] as usize
    }

    /// The tensors to store, e.g. with `tensor::safetensors::save`: `"mean"`
    /// (f64 `[D]`), `"cov"` (f64 `[D, D]`) and `"n"` (i64, shape []).
    pub fn to_tensors(&self) -> NamedTensors {
        NamedTensors::from([
            ("mean".to_string(), self.mean.copy()),
            ("cov".to_string(), self.cov.copy()),
            (
                "n".to_string(),
                Tensor::from_slice(&[self.n as i64]).squeeze(),
            ),
        ])
    }

    /// The Gaussian of [`Gaussian::to_tensors`] (other tensors are ignored).
    pub fn from_tensors(tensors: &NamedTensors) -> Result<Self> {
        let get = |name: &str| {
            tensors.get(name).ok_or_else(|| {
                Error::Features(format!("stored Gaussian: no tensor {name:?} (has {:?})", {
                    tensors.keys().collect::<Vec<_>>()
                }))
            })
        };
        let n = get("n")?;
        if n.numel() != 1 || n.is_floating_point() {
            return Err(Error::Features(format!(
                "stored Gaussian: \"n\" must be one integer, got {:?} of shape {:?}",
                n.kind(),
                n.size()
            )));
        }
        let n = i64::try_from(n)?;
        let n = usize::try_from(n).map_err(|_| Error::Parameter {
            name: "n",
            value: n.to_string(),
            expected: "a sample count of 2 or more".into(),
        })?;
        Gaussian::new(get("mean")?, get("cov")?, n)
    }
}

/// The Frechet distance between two Gaussians of the same dimension.
///
/// Round-off can leave the exact value 0 (equal Gaussians) a hair below 0;
/// such results are returned as 0.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::Features(format!(
            "Gaussians of different dimensions: {} and {}",
            a.dim(),
            b.dim()
        )));
    }
    let mean_term = f64::try_from((&a.mean - &b.mean).square().sum(Kind::Double))?;
    let trace = |m: &Tensor| f64::try_from(m.trace());
    let sqrt_a = sqrtm_psd(&a.cov)?;
    let cross = sqrt_a.matmul(&b.cov).matmul(&sqrt_a);
    let cross_term = trace_sqrtm_psd(&cross)?;
    let fd = mean_term + trace(&a.cov)? + trace(&b.cov)? - 2.0 * cross_term;
    Ok(if fd < 0.0 { 0.0 } else { fd })
}

/// The Frechet distance between Gaussians fitted to `a` `[N, D]` and `b`
/// `[M, D]`, N, M >= 2.
pub fn fd(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (ga, gb) = (Gaussian::of(a)?, Gaussian::of(b)?);
    same_dim(a, "first features", b, "second features")?;
    frechet_distance(&ga, &gb)
}

/// `(m + m^T) / 2`: exactly `m` when `m` is symmetric, and removes the
/// round-off asymmetry of a computed covariance, so that a stored and
/// reloaded Gaussian is bit for bit the one computed.
fn symmetric_part(m: &Tensor) -> Tensor {
    (m + m.transpose(0, 1)) / 2.0
}

/// Eigenvalues (clamped to >= 0) and eigenvectors of the symmetric part of
/// `m`, a symmetric positive semi-definite matrix up to round-off.
fn eigh_psd(m: &Tensor) -> Result<(Tensor, Tensor)> {
    let (values, vectors) = symmetric_part(m).f_linalg_eigh("L")?;
    Ok((values.clamp_min(0.0), vectors))
}

/// The symmetric square root `V diag(sqrt(w)) V^T` of a PSD matrix
/// `V diag(w) V^T`.
fn sqrtm_psd(m: &Tensor) -> Result<Tensor> {
    let (values, vectors) = eigh_psd(m)?;
    Ok((&vectors * values.sqrt().unsqueeze(0)).matmul(&vectors.transpose(0, 1)))
}

/// `tr(sqrt(m))` of a PSD matrix: the sum of the roots of its eigenvalues.
fn trace_sqrtm_psd(m: &Tensor) -> Result<f64> {
    let (values, _) = eigh_psd(m)?;
    Ok(f64::try_from(values.sqrt().sum(Kind::Double))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f64]) -> Tensor {
        Tensor::from_slice(values)
    }

    fn diag(values: &[f64]) -> Tensor {
        t(values).diag(0)
    }

    /// A rotation of R^3 that mixes every axis.
    fn rotation() -> Tensor {
        let a = t(&[1.0, 2.0, 0.5, -1.0, 0.3, 2.0, 0.7, -0.4, 1.5]).view([3, 3]);
        let (q, _) = Tensor::linalg_qr(&a, "reduced");
        q
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1.0)
    }

    #[test]
    fn a_set_has_distance_zero_to_itself() {
        tch::manual_seed(0);
        let x = Tensor::randn([500, 32], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let g = Gaussian::of(&x).unwrap();
        let scale = f64::try_from(g.cov().trace()).unwrap();
        let d = fd(&x, &x).unwrap();
        assert!(d.abs() < 1e-9 * scale, "{d} (trace {scale})");
    }

    #[test]
    fn diagonal_covariances_match_the_closed_form() {
        // FD = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 for diagonal S.
        let (a, b) = ([4.0, 1.0, 0.25], [1.0, 9.0, 0.25]);
        let (m1, m2) = ([0.0, 1.0, 2.0], [1.0, 1.0, 0.0]);
        let expected = (1.0 + 0.0 + 4.0) + (1.0 + 4.0 + 0.0);
        let g1 = Gaussian::new(&t(&m1), &diag(&a), 10).unwrap();
        let g2 = Gaussian::new(&t(&m2), &diag(&b), 10).unwrap();
        let d = frechet_distance(&g1, &g2).unwrap();
        assert!(close(d, expected, 1e-12), "{d} vs {expected}");
        // The same Gaussians rotated: FD is invariant, and the covariances are
        // no longer diagonal.
        let r = rotation();
        let rot = |s: &Tensor| r.matmul(s).matmul(&r.transpose(0, 1));
        let g1 = Gaussian::new(&r.matmul(&t(&m1)), &rot(&diag(&a)), 10).unwrap();
        let g2 = Gaussian::new(&r.matmul(&t(&m2)), &rot(&diag(&b)), 10).unwrap();
        let d = frechet_distance(&g1, &g2).unwrap();
        assert!(close(d, expected, 1e-12), "{d} vs {expected}");
    }

    #[test]
    fn non_commuting_2x2_covariances_match_the_closed_form() {
        // For a 2x2 PSD matrix A, tr sqrt(A) = sqrt(tr A + 2 sqrt(det A)); with
        // A = S1^1/2 S2 S1^1/2: tr A = tr(S1 S2), det A = det S1 det S2.
        let s1 = [2.0, 0.5, 0.5, 1.0];
        let s2 = [1.0, -0.7, -0.7, 3.0];
        let det = |s: &[f64; 4]| s[0] * s[3] - s[1] * s[2];
        let tr_s1s2 = s1[0] * s2[0] + s1[1] * s2[2] + s1[2] * s2[1] + s1[3] * s2[3];
        let cross = (tr_s1s2 + 2.0 * (det(&s1) * det(&s2)).sqrt()).sqrt();
        let expected = 0.25 + 3.0 + 4.0 - 2.0 * cross;
        let g1 = Gaussian::new(&t(&[0.0, 0.0]), &t(&s1).view([2, 2]), 5).unwrap();
        let g2 = Gaussian::new(&t(&[0.5, 0.0]), &t(&s2).view([2, 2]), 5).unwrap();
        let d = frechet_distance(&g1, &g2).unwrap();
        assert!(close(d, expected, 1e-12), "{d} vs {expected}");
        // and FD is symmetric
        let back = frechet_distance(&g2, &g1).unwrap();
        assert!(close(back, expected, 1e-12), "{back} vs {expected}");
    }

    #[test]
    fn the_covariance_is_unbiased() {
        let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 7.0]).view([3, 2]);
        let g = Gaussian::of(&x).unwrap();
        let mean = Vec::<f64>::try_from(g.mean()).unwrap();
        assert!(
            close(mean[0], 3.0, 1e-15) && close(mean[1], 13.0 / 3.0, 1e-15),
            "{mean:?}"
        );
        let cov = Vec::<f64>::try_from(g.cov().flatten(0, 1)).unwrap();
        // columns (1, 3, 5) and (2, 4, 7): var 4, 6.333..., cov 5
        let expected = [4.0, 5.0, 5.0, 19.0 / 3.0];
        assert!(
            cov.iter().zip(expected).all(|(a, b)| close(*a, b, 1e-14)),
            "{cov:?}"
        );
        assert_eq!((g.n(), g.dim()), (3, 2));
    }

    #[test]
    fn gaussians_round_trip_through_safetensors() {
        tch::manual_seed(2);
        let x = Tensor::randn([40, 5], (Kind::Float, Device::Cpu));
        let g = Gaussian::of(&x).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real.safetensors");
        let tensors = g.to_tensors();
        let named: Vec<_> = tensors.iter().collect();
        tensor::safetensors::save(&path, &named, None).unwrap();
        let back = Gaussian::from_tensors(&tensor::safetensors::load(&path, Device::Cpu).unwrap());
        let back = back.unwrap();
        assert_eq!(back.n(), 40);
        assert!(back.mean().equal(g.mean()) && back.cov().equal(g.cov()));
        assert!(frechet_distance(&g, &back).unwrap() < 1e-12);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let x = Tensor::randn([10, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
        assert!(matches!(fd(&x, &y), Err(Error::Features(_))));
        assert!(matches!(
            fd(&x, &x.narrow(0, 0, 1)),
            Err(Error::Features(_))
        ));
        assert!(matches!(
            Gaussian::of(&x.flatten(0, 1)),
            Err(Error::Features(_))
        ));
        let mean = t(&[0.0, 0.0]);
        assert!(Gaussian::new(&mean, &diag(&[1.0, 1.0, 1.0]), 5).is_err());
        assert!(matches!(
            Gaussian::new(&mean, &diag(&[1.0, 1.0]), 1),
            Err(Error::Parameter { name: "n", .. })
        ));
        let mut tensors = Gaussian::of(&x).unwrap().to_tensors();
        tensors.remove("cov");
        let msg = Gaussian::from_tensors(&tensors).unwrap_err().to_string();
        assert!(msg.contains("\"cov\""), "{msg}");
    }
}
