"""Interventional Robustness Score (Suter et al. 2019), as dlib's ``compute_irs``."""

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
    histogram_discretize,
    sample_codes,
)


def irs_from_codes(
    codes: np.ndarray, factors: np.ndarray, *, diff_quantile: float = 0.99, num_bins: int = 20
) -> float:
    """IRS on fixed data (dlib's ``scalable_disentanglement_score`` after its preprocessing).

    The factors go through the 20-bin histogram discretizer (a relabelling for factors with at
    most 20 values; it merges values of larger factors, as dlib does). Latents with zero
    variance are dropped; if none is left the score is 0 (dlib). Not scale-invariant: the
    per-latent scores are averaged with the latents' max deviations as weights.

    Returns:
        IRS in [0, 1] (pure noise scores about 0.37, not 0); higher is better.
    """
    codes = np.asarray(check_codes(codes, None, "irs"), dtype=np.float64)
    factors = check_factors(factors, codes.shape[0], "irs")
    if not 0.0 < diff_quantile <= 1.0:
        raise AnalysisError(f"irs: diff_quantile must be in (0, 1], got {diff_quantile}.")
    codes = codes[:, codes.var(axis=0) > 0.0]
    if codes.shape[1] == 0:
        return 0.0
    labels = histogram_discretize(factors, num_bins)
    num_factors = labels.shape[1]
    cum_dev = np.zeros((codes.shape[1], num_factors))
    for i in range(num_factors):
        values = np.unique(labels[:, i])
        for v in values:
            group = codes[labels[:, i] == v]
            diffs = np.abs(group - group.mean(axis=0))
            cum_dev[:, i] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum_dev[:, i] /= values.size
    max_dev = np.max(np.abs(codes - codes.mean(axis=0)), axis=0)
    scores = (1.0 - cum_dev / max_dev[:, None]).max(axis=1)
    if max_dev.sum() > 0.0:
        return float(np.average(scores, weights=max_dev))
    return float(np.mean(scores))  # pragma: no cover - max_dev > 0 for non-constant codes


def irs(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    diff_quantile: float = 0.99,
    num_bins: int = 20,
) -> dict[str, float]:
    """IRS with dlib's budgets (``config/sample/irs/irs.gin``). Key ``irs``."""
    check_random_state(random_state, "irs")
    check_positive("irs", num_train=num_train, batch_size=batch_size, num_bins=num_bins)
    codes, factors = sample_codes(data, represent, num_train, random_state, batch_size, "irs")
    return {"irs": irs_from_codes(codes, factors, diff_quantile=diff_quantile, num_bins=num_bins)}
