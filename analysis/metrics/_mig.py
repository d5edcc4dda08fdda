"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's ``compute_mig``."""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._utils import (
    GroundTruthData,
    Represent,
    check_codes,
    check_factors,
    check_positive,
    check_random_state,
    entropy,
    histogram_discretize,
    mutual_info_matrix,
    sample_codes,
    varying_factors,
)


def mig_from_codes(codes: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> float:
    """MIG on fixed data (dlib's ``_compute_mig``).

    Args:
        codes: (N, num_codes) latent values, finite; at least 2 codes.
        factors: (N, num_factors) integer factor classes (discretise continuous factors first).
        num_bins: equal-width histogram bins per latent.
    Returns:
        Mean over factors of (largest - second largest MI over latents) / H(factor), in [0, 1];
        higher is better. Factors that take a single value are left out (dlib: NaN).
    """
    codes = check_codes(codes, None, "mig")
    factors = check_factors(factors, codes.shape[0], "mig")
    if codes.shape[1] < 2:
        raise AnalysisError("mig: needs at least 2 latent dimensions, got 1.")
    factors = factors[:, varying_factors(factors, "mig")]
    m = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)  # (D, F)
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy(factors)))


def mig(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """MIG with dlib's study budgets (10000 points, batches of 16, 20 bins). Key ``mig``."""
    check_random_state(random_state, "mig")
    check_positive("mig", num_train=num_train, batch_size=batch_size, num_bins=num_bins)
    codes, factors = sample_codes(data, represent, num_train, random_state, batch_size, "mig")
    return {"mig": mig_from_codes(codes, factors, num_bins=num_bins)}
