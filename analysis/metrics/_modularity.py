"""Modularity and Explicitness (Ridgeway & Mozer 2018), as disentanglement_lib computes them."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from analysis.metrics._utils import (
    GroundTruthData,
    Represent,
    check_codes,
    check_factors,
    check_positive,
    check_random_state,
    histogram_discretize,
    mutual_info_matrix,
    sample_codes,
    varying_factors,
)


def modularity_from_mi(mi: np.ndarray) -> float:
    """Modularity from a (num_codes, num_factors) MI matrix; a latent with no MI scores 0."""
    sq = np.square(mi)
    top = sq.max(axis=1)
    num_factors = sq.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (sq.sum(axis=1) - top) / (top * max(num_factors - 1.0, 1.0))
        score = 1.0 - delta
    score[top == 0.0] = 0.0
    return float(np.mean(score))


def _auc(labels: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes that occur (and not everywhere) in labels.

    dlib fits a ``MultiLabelBinarizer`` on the labels, which breaks (ValueError) when a class
    is missing from the test set; here such columns are skipped, which equals dlib whenever
    every class occurs.
    """
    onehot = labels[:, None] == classes[None, :]
    cols = [c for c in range(classes.size) if 0 < onehot[:, c].sum() < labels.size]
    if not cols:
        return float("nan")
    return float(roc_auc_score(onehot[:, cols].astype(int), proba[:, cols], average="macro"))


def modularity_explicitness_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    num_bins: int = 20,
) -> dict[str, float]:
    """Modularity and explicitness on fixed data.

    Modularity: from the MI between the 20-bin discretised latents and the factors (the MI
    bias makes pure noise look modular: ~0.65). Explicitness: per factor, the macro ROC AUC of
    ``LogisticRegression()`` on the standardised codes (train mean/std; a constant latent is
    left at 0 instead of dlib's NaN), on train and test; mean over factors.

    Returns:
        ``modularity``, ``explicitness_train``, ``explicitness_test``, in [0, 1], higher is
        better. Factors with a single training value are left out.
    """
    codes_train = np.asarray(check_codes(codes_train, None, "modularity_explicitness"), float)
    codes_test = np.asarray(check_codes(codes_test, None, "modularity_explicitness"), float)
    factors_train = check_factors(factors_train, codes_train.shape[0], "modularity_explicitness")
    factors_test = check_factors(factors_test, codes_test.shape[0], "modularity_explicitness")
    keep = varying_factors(factors_train, "modularity_explicitness")
    factors_train, factors_test = factors_train[:, keep], factors_test[:, keep]
    mi = mutual_info_matrix(histogram_discretize(codes_train, num_bins), factors_train)
    mean = codes_train.mean(axis=0)
    std = codes_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x_train = (codes_train - mean) / std
    x_test = (codes_test - mean) / std
    train_auc, test_auc = [], []
    for j in range(factors_train.shape[1]):
        clf = LogisticRegression()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x_train, factors_train[:, j])
        train_auc.append(_auc(factors_train[:, j], clf.predict_proba(x_train), clf.classes_))
        test_auc.append(_auc(factors_test[:, j], clf.predict_proba(x_test), clf.classes_))
    return {
        "modularity": modularity_from_mi(mi),
        "explicitness_train": float(np.nanmean(train_auc)),
        "explicitness_test": float(np.nanmean(test_auc)),
    }


def modularity_explicitness(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict[str, float]:
    """Modularity and explicitness with dlib's study budgets. See the ``_from_codes`` form."""
    check_random_state(random_state, "modularity_explicitness")
    check_positive(
        "modularity_explicitness", num_train=num_train, num_test=num_test, batch_size=batch_size
    )
    where = "modularity_explicitness"
    x_train, y_train = sample_codes(data, represent, num_train, random_state, batch_size, where)
    x_test, y_test = sample_codes(data, represent, num_test, random_state, batch_size, where)
    return modularity_explicitness_from_codes(x_train, y_train, x_test, y_test, num_bins=num_bins)
