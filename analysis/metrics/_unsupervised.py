"""disentanglement_lib's ``unsupervised_metrics`` (lower = more independent latents)."""

from __future__ import annotations

import numpy as np
import scipy.linalg

from analysis.metrics._utils import (
    GroundTruthData,
    Represent,
    check_codes,
    check_positive,
    check_random_state,
    histogram_discretize,
    mutual_info_matrix,
    sample_codes,
)


def unsupervised_from_codes(codes: np.ndarray, *, num_bins: int = 20) -> dict[str, float]:
    """Gaussian total correlation, Gaussian Wasserstein correlation (and normalised), MI score.

    Constant latents are independent of everything: they are left out of the Gaussian scores
    (dlib takes log 0 and returns -inf/NaN) and contribute MI 0 to ``mutual_info_score``.

    Returns:
        ``gaussian_total_correlation`` (nats, >= 0), ``gaussian_wasserstein_correlation``
        (>= 0, scale-dependent), ``gaussian_wasserstein_correlation_norm`` (divided by tr C)
        and ``mutual_info_score`` (mean pairwise MI of the 20-bin discretised latents, nats).
        All are LOWER-is-better (0 = independent latents); pure noise sits at the estimator
        bias floor, so they do not measure disentanglement on their own.
    """
    codes = np.asarray(check_codes(codes, None, "unsupervised"), dtype=np.float64)
    num_codes = codes.shape[1]
    varying = codes.var(axis=0) > 0.0
    if varying.sum() >= 1:
        cov = np.atleast_2d(np.cov(codes[:, varying], rowvar=False))
        diag = np.diag(cov)
        tc = 0.5 * (np.sum(np.log(diag)) - np.linalg.slogdet(cov)[1])
        root = scipy.linalg.sqrtm(cov * diag[:, None])
        w2 = 2.0 * np.trace(cov) - 2.0 * float(np.real(np.trace(root)))
        w2_norm = w2 / np.sum(diag)
    else:
        tc = w2 = w2_norm = 0.0
    if num_codes > 1:
        labels = histogram_discretize(codes, num_bins)
        mi = mutual_info_matrix(labels, labels)
        np.fill_diagonal(mi, 0.0)
        mi_score = mi.sum() / (num_codes**2 - num_codes)
    else:
        mi_score = 0.0
    return {
        "gaussian_total_correlation": float(tc),
        "gaussian_wasserstein_correlation": float(w2),
        "gaussian_wasserstein_correlation_norm": float(w2_norm),
        "mutual_info_score": float(mi_score),
    }


def unsupervised(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """Unsupervised scores with dlib's budgets (factors are sampled but not used)."""
    check_random_state(random_state, "unsupervised")
    check_positive("unsupervised", num_train=num_train, batch_size=batch_size, num_bins=num_bins)
    codes, _ = sample_codes(data, represent, num_train, random_state, batch_size, "unsupervised")
    return unsupervised_from_codes(codes, num_bins=num_bins)
