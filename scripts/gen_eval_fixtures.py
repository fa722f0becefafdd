"""Reference numbers for the metric tests of crates/eval (tests/metrics.rs).

Run: cargo xtask py scripts/gen_eval_fixtures.py

Draws two fixed feature sets in float64 with numpy (seeded), `real` [300, 16]
and `fake` [250, 16], Gaussians with different means and covariances, and
computes in float64 with numpy alone (scipy and sklearn are not in the oracle):

- the Frechet distance, with the unbiased covariances (np.cov) and
  tr sqrt(S1^1/2 S2 S1^1/2) from symmetric eigendecompositions; checked here
  against the pytorch-fid form tr sqrt(S1 S2) from the eigenvalues of S1 S2;
- the unbiased MMD^2 of KID (cubic polynomial kernel (x.y / D + 1)^3) on all
  pairs: `mmd2_all_pairs` between all 300 real and 250 fake rows, and
  `kid_one_subset` with torch-fidelity's formula (equal sizes) between the
  first 250 real rows and the 250 fake rows, which is what one KID subset of
  250 rows of each (a permutation of both sets) gives;
- precision, recall, density and coverage as `prdc.compute_prdc` (Naeem et
  al., github.com/clovaai/generative-evaluation-prdc) computes them, its
  functions copied below with sklearn's pairwise_distances replaced by
  numpy; for k = 1, 3, 5, with the integer counts behind each fraction.
  Every distance compared with a radius is at least 1e-9 away from it, so
  that round-off in another distance formula cannot flip a comparison.

Writes crates/eval/tests/fixtures/metrics.safetensors (`real`, `fake`,
float64) and crates/eval/tests/fixtures/metrics.json (the numbers).
"""

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "eval" / "tests" / "fixtures"
SEED = 20240611
D = 16
KS = [1, 3, 5]
MIN_MARGIN = 1e-9


def features():
    rng = np.random.default_rng(SEED)
    # real ~ N(0, A A^T); fake ~ N(0.3, B B^T / 2): different mean and
    # covariance, but overlapping, so that PRDC lies strictly between 0 and 1
    a = rng.standard_normal((D, D)) / np.sqrt(D)
    b = rng.standard_normal((D, D)) / np.sqrt(D) + 0.3 * np.eye(D)
    real = rng.standard_normal((300, D)) @ a.T
    fake = 0.3 + rng.standard_normal((250, D)) @ b.T / np.sqrt(2.0)
    return real, fake


# --- Frechet distance ---------------------------------------------------------


def sqrtm_psd(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet(real, fake):
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    r1 = sqrtm_psd(s1)
    cross = r1 @ s2 @ r1
    tr_cross = np.sqrt(np.clip(np.linalg.eigvalsh((cross + cross.T) / 2), 0, None)).sum()
    fd = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_cross
    # pytorch-fid's form: tr sqrt(S1 S2), here from the eigenvalues of S1 S2
    # (real and positive in exact arithmetic)
    ev = np.linalg.eigvals(s1 @ s2)
    assert np.abs(ev.imag).max() < 1e-10 and ev.real.min() > 0, ev
    fd_alt = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(ev.real).sum()
    assert abs(fd - fd_alt) <= 1e-10 * fd, (fd, fd_alt)
    return float(fd)


# --- KID ------------------------------------------------------------------------


def polynomial_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD^2 for any sizes m, n."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (kxx.sum() - np.diagonal(kxx).sum()) / (m * (m - 1))
    yy = (kyy.sum() - np.diagonal(kyy).sum()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.sum() / (m * n))


def mmd2_torch_fidelity(k_xx, k_xy, k_yy):
    """torch_fidelity.metric_kid.mmd2 with mmd_est='unbiased' (equal sizes)."""
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    k_xy_sum = k_xy.sum(axis=0).sum()
    return float((kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy_sum / (m * m))


# --- PRDC (prdc/prdc.py, sklearn replaced by numpy) -----------------------------


def compute_pairwise_distance(data_x, data_y=None):
    if data_y is None:
        data_y = data_x
    return np.sqrt(((data_x[:, None, :] - data_y[None, :, :]) ** 2).sum(-1))


def get_kth_value(unsorted, k, axis=-1):
    indices = np.argpartition(unsorted, k, axis=axis)[..., :k]
    k_smallests = np.take_along_axis(unsorted, indices, axis=axis)
    return k_smallests.max(axis=axis)


def compute_nearest_neighbour_distances(input_features, nearest_k):
    distances = compute_pairwise_distance(input_features)
    return get_kth_value(distances, k=nearest_k + 1, axis=-1)


def compute_prdc(real_features, fake_features, nearest_k):
    real_nnd = compute_nearest_neighbour_distances(real_features, nearest_k)
    fake_nnd = compute_nearest_neighbour_distances(fake_features, nearest_k)
    distance_real_fake = compute_pairwise_distance(real_features, fake_features)

    in_real = distance_real_fake < np.expand_dims(real_nnd, axis=1)
    in_fake = distance_real_fake < np.expand_dims(fake_nnd, axis=0)
    nearest_fake = distance_real_fake.min(axis=1)

    precision = in_real.any(axis=0).mean()
    recall = in_fake.any(axis=1).mean()
    density = (1.0 / float(nearest_k)) * in_real.sum(axis=0).mean()
    coverage = (nearest_fake < real_nnd).mean()

    margin = min(
        np.abs(distance_real_fake - real_nnd[:, None]).min(),
        np.abs(distance_real_fake - fake_nnd[None, :]).min(),
        np.abs(nearest_fake - real_nnd).min(),
    )
    assert margin > MIN_MARGIN, (nearest_k, margin)
    return {
        "k": nearest_k,
        "precision": float(precision),
        "recall": float(recall),
        "density": float(density),
        "coverage": float(coverage),
        # the integers behind the fractions, for exact comparisons
        "fakes_in_real_manifold": int(in_real.any(axis=0).sum()),
        "reals_in_fake_manifold": int(in_fake.any(axis=1).sum()),
        "fake_real_ball_pairs": int(in_real.sum()),
        "real_balls_covered": int((nearest_fake < real_nnd).sum()),
    }


def main():
    real, fake = features()
    assert real.dtype == fake.dtype == np.float64
    subset = real[:250]
    kid_one_subset = mmd2_torch_fidelity(
        polynomial_kernel(subset, subset), polynomial_kernel(subset, fake), polynomial_kernel(fake, fake)
    )
    assert abs(kid_one_subset - mmd2_unbiased(subset, fake)) <= 1e-12 * abs(kid_one_subset)
    doc = {
        "generator": "scripts/gen_eval_fixtures.py",
        "numpy": np.__version__,
        "seed": SEED,
        "num_real": len(real),
        "num_fake": len(fake),
        "dim": D,
        "fd": frechet(real, fake),
        "mmd2_all_pairs": mmd2_unbiased(real, fake),
        "kid_one_subset": kid_one_subset,
        "kid_one_subset_rows": len(subset),
        "prdc": [compute_prdc(real, fake, k) for k in KS],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {"real": np.ascontiguousarray(real), "fake": np.ascontiguousarray(fake)},
        str(OUT / "metrics.safetensors"),
    )
    (OUT / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "prdc"}))
    for p in doc["prdc"]:
        print(p)
    print(f"wrote {OUT.relative_to(ROOT)}/metrics.{{safetensors,json}}")


if __name__ == "__main__":
    main()
