"""SAP score (Kumar et al. 2018), as disentanglement_lib's ``compute_sap``."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from analysis.metrics._utils import (
    GroundTruthData,
    Represent,
    check_codes,
    check_factors,
    check_positive,
    check_random_state,
    sample_codes,
    varying_factors,
)


def _score_matrix(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    continuous: bool,
) -> np.ndarray:
    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    s = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        for j in range(num_factors):
            if continuous:
                c = np.cov(x_train[:, i], y_train[:, j], ddof=1)
                if c[0, 0] > 1e-12:
                    s[i, j] = c[0, 1] ** 2 / (c[0, 0] * c[1, 1])
            else:
                clf = LinearSVC(C=0.01, class_weight="balanced")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    clf.fit(x_train[:, i : i + 1], y_train[:, j])
                s[i, j] = np.mean(clf.predict(x_test[:, i : i + 1]) == y_test[:, j])
    return s


def sap_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    continuous_factors: bool = False,
) -> float:
    """SAP on fixed data (dlib's ``_compute_sap``).

    Discrete mode (dlib's study setting): S_ij = test accuracy of
    ``LinearSVC(C=0.01, class_weight="balanced")`` predicting factor j from latent i alone.
    Continuous mode: S_ij = R^2 between latent i and factor j on the train set (the test set
    is ignored), 0 for a latent with variance <= 1e-12. The two modes are not comparable
    (a perfect latent scores ~0.4 in discrete mode against ~1 in continuous mode).

    Returns:
        Mean over factors of (best - second best S over latents), in [0, 1]; higher is better.
        Factors with a single training value are left out.
    """
    codes_train = check_codes(codes_train, None, "sap")
    codes_test = check_codes(codes_test, None, "sap")
    factors_train = check_factors(factors_train, codes_train.shape[0], "sap")
    factors_test = check_factors(factors_test, codes_test.shape[0], "sap")
    keep = varying_factors(factors_train, "sap")
    s = _score_matrix(
        np.asarray(codes_train, dtype=np.float64),
        factors_train[:, keep],
        np.asarray(codes_test, dtype=np.float64),
        factors_test[:, keep],
        continuous_factors,
    )
    if s.shape[0] < 2:
        return float(np.mean(s[0]))
    top = np.sort(s, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def sap(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    continuous_factors: bool = False,
) -> dict[str, float]:
    """SAP with dlib's study budgets (discrete mode by default). Key ``sap``."""
    check_random_state(random_state, "sap")
    check_positive("sap", num_train=num_train, num_test=num_test, batch_size=batch_size)
    x_train, y_train = sample_codes(data, represent, num_train, random_state, batch_size, "sap")
    x_test, y_test = sample_codes(data, represent, num_test, random_state, batch_size, "sap")
    value = sap_from_codes(
        x_train, y_train, x_test, y_test, continuous_factors=continuous_factors
    )
    return {"sap": value}
