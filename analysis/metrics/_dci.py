"""DCI disentanglement (Eastwood & Williams 2018), as disentanglement_lib's ``compute_dci``."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier

from analysis.errors import AnalysisError
from analysis.metrics._gbt import ExactGradientBoosting
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


def _default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


ENGINES = ("auto", "exact", "sklearn")


def _fit_one(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    seed: int,
    engine: str,
    n_estimators: int,
) -> tuple[np.ndarray, float, float]:
    if engine == "sklearn":
        model: Any = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(x_train, y_train)
        train_pred = model.predict(x_train)
    else:
        model = ExactGradientBoosting(n_estimators=n_estimators, seed=seed).fit(x_train, y_train)
        train_pred = model.predict_from_decision(model.train_decision_)  # = predict(x_train)
    importances = np.abs(model.feature_importances_)
    train_acc = np.mean(train_pred == y_train)
    test_acc = np.mean(model.predict(x_test) == y_test)
    return importances, float(train_acc), float(test_acc)


def importance_gbt(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seeds: np.ndarray,
    n_jobs: int | None = None,
    engine: str = "auto",
    n_estimators: int = 100,
) -> tuple[np.ndarray, float, float]:
    """Per-factor ``GradientBoostingClassifier``: importances (D, F), mean train/test accuracy.

    Factors are fit in parallel threads (scikit-learn builds trees without the GIL); each
    factor's fit is exactly dlib's, so the values do not depend on ``n_jobs``.
    """
    if engine not in ENGINES:
        raise AnalysisError(f"dci: engine must be one of {ENGINES}, got {engine!r}.")
    if engine == "auto":
        engine = "exact"
    num_factors = y_train.shape[1]
    jobs = min(num_factors, n_jobs or _default_jobs())
    args = [
        (x_train, y_train[:, j], x_test, y_test[:, j], int(seeds[j]), engine, n_estimators)
        for j in range(num_factors)
    ]
    if jobs <= 1:
        results = [_fit_one(*a) for a in args]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(lambda a: _fit_one(*a), args))
    importance = np.stack([r[0] for r in results], axis=1)
    train_acc = float(np.mean([r[1] for r in results]))
    return importance, train_acc, float(np.mean([r[2] for r in results]))


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 - entropy of each column of ``p`` (normalised), in base ``base``; 1 if base < 2."""
    if base < 2:
        return np.ones(p.shape[1])
    return 1.0 - scipy.stats.entropy(p + 1e-11, base=base, axis=0)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness from an importance matrix R (num_codes, num_factors)."""
    num_codes, num_factors = importance.shape
    per_code = _one_minus_entropy(importance.T, num_factors)
    per_factor = _one_minus_entropy(importance, num_codes)
    weights = importance if importance.sum() != 0.0 else np.ones_like(importance)
    code_w = weights.sum(axis=1) / weights.sum()
    factor_w = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_w)), float(np.sum(per_factor * factor_w))


def dci_from_codes(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    *,
    seed: int | np.random.RandomState = 0,
    n_jobs: int | None = None,
    engine: str = "auto",
    n_estimators: int = 100,
) -> dict[str, float]:
    """DCI on fixed data (dlib's ``_compute_dci``).

    Args:
        codes_train, codes_test: (N, num_codes) latent values.
        factors_train, factors_test: (N, num_factors) integer factor classes.
        seed: seeds the trees' feature order (dlib leaves it to numpy's global RNG).
        n_jobs: threads across factors (None: the CPUs this process may use).
        n_estimators: boosting stages (dlib: scikit-learn's default 100).
        engine: ``"sklearn"``: ``GradientBoostingClassifier()`` as dlib; ``"exact"`` (and
            ``"auto"``): the same algorithm in numpy (``_gbt``: features sorted once, a
            histogram split search on codes with few distinct values; importances agree with
            scikit-learn as closely as two scikit-learn seeds agree, to ~1e-13 on
            discrete-valued codes).
    Returns:
        ``dci_disentanglement``, ``dci_completeness`` in [0, 1]; ``dci_informativeness_train``
        and ``_test``: mean per-factor accuracy (as dlib; not the paper's error), in [0, 1].
        All higher-is-better. Factors with a single training value are left out.
    """
    codes_train = check_codes(codes_train, None, "dci")
    codes_test = check_codes(codes_test, None, "dci")
    if codes_test.shape[1] != codes_train.shape[1]:
        raise AnalysisError("dci: train and test codes have different widths.")
    factors_train = check_factors(factors_train, codes_train.shape[0], "dci")
    factors_test = check_factors(factors_test, codes_test.shape[0], "dci")
    keep = varying_factors(factors_train, "dci")
    if isinstance(seed, np.random.RandomState):
        seeds = seed.randint(2**31 - 1, size=factors_train.shape[1])
    else:
        seeds = np.random.RandomState(seed).randint(2**31 - 1, size=factors_train.shape[1])
    importance, train_acc, test_acc = importance_gbt(
        np.asarray(codes_train, dtype=np.float64),
        factors_train[:, keep],
        np.asarray(codes_test, dtype=np.float64),
        factors_test[:, keep],
        seeds=seeds[keep],
        n_jobs=n_jobs,
        engine=engine,
        n_estimators=n_estimators,
    )
    dis, comp = dci_from_importance(importance)
    return {
        "dci_disentanglement": dis,
        "dci_completeness": comp,
        "dci_informativeness_train": train_acc,
        "dci_informativeness_test": test_acc,
    }


def dci(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    n_jobs: int | None = None,
    engine: str = "auto",
    n_estimators: int = 100,
) -> dict[str, float]:
    """DCI with dlib's study budgets (10000 train and 5000 test points, batches of 16).

    The tree seeds are drawn from ``random_state`` after the samples, so the samples are
    dlib's and one seed gives one result (dlib's trees use numpy's unseeded global RNG, which
    moves continuous-code results by ~1e-4). See :func:`dci_from_codes` for the keys.
    """
    check_random_state(random_state, "dci")
    check_positive(
        "dci",
        num_train=num_train,
        num_test=num_test,
        batch_size=batch_size,
        n_estimators=n_estimators,
    )
    x_train, y_train = sample_codes(data, represent, num_train, random_state, batch_size, "dci")
    x_test, y_test = sample_codes(data, represent, num_test, random_state, batch_size, "dci")
    return dci_from_codes(
        x_train,
        y_train,
        x_test,
        y_test,
        seed=random_state,
        n_jobs=n_jobs,
        engine=engine,
        n_estimators=n_estimators,
    )
