"""The DCI gradient boosting agrees with scikit-learn's GradientBoostingClassifier."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from analysis.metrics import dci_from_codes
from analysis.metrics._gbt import ExactGradientBoosting


def _problem(n: int, d: int, k: int, seed: int, discrete: bool):
    rs = np.random.RandomState(seed)
    x = rs.randn(n, d)
    score = x[:, 0] + 0.5 * x[:, 1] + 0.3 * rs.randn(n)
    y = np.clip((score * k / 4 + k / 2).astype(int), 0, k - 1)
    if discrete:
        x = np.round(x * 2) / 2
    return x, y


@pytest.mark.parametrize("k,discrete", [(2, False), (4, False), (5, True)])
def test_same_trees_as_sklearn_up_to_its_own_tie_noise(k, discrete) -> None:
    """Importances agree with sklearn as closely as two sklearn seeds agree with each other.

    (scikit-learn breaks near-equal splits by a random feature order; dlib leaves that order
    to numpy's global RNG, so this spread is inherent in dlib's DCI.)
    """
    x, y = _problem(400, 4, k, 0, discrete)
    xt, _ = _problem(200, 4, k, 1, discrete)
    sk = [GradientBoostingClassifier(n_estimators=30, random_state=s).fit(x, y) for s in (0, 1)]
    ours = ExactGradientBoosting(n_estimators=30, seed=0).fit(x, y)
    spread = np.abs(sk[0].feature_importances_ - sk[1].feature_importances_).max()
    diff = np.abs(ours.feature_importances_ - sk[0].feature_importances_).max()
    assert diff <= max(3 * spread, 2e-3)
    assert ours.feature_importances_.sum() == pytest.approx(1.0)
    assert np.mean(ours.predict(x) == sk[0].predict(x)) > 0.98
    assert np.mean(ours.predict(xt) == sk[0].predict(xt)) > 0.97


def test_first_stage_is_sklearns_first_tree() -> None:
    """Without near-ties, one stage reproduces sklearn's tree exactly (splits and values)."""
    rs = np.random.RandomState(3)
    x = rs.randn(300, 3)
    y = (x[:, 0] + 0.2 * rs.randn(300) > 0.1).astype(int)
    sk = GradientBoostingClassifier(n_estimators=1, max_depth=1).fit(x, y)
    ours = ExactGradientBoosting(n_estimators=1, max_depth=1).fit(x, y)
    tree = sk.estimators_[0, 0].tree_
    assert ours._feature[0, 0, 0] == tree.feature[0]
    assert ours._threshold[0, 0, 0] == pytest.approx(tree.threshold[0])
    assert np.allclose(sk.decision_function(x), ours.decision_function(x)[:, 0])


def test_dci_engines_agree() -> None:
    rs = np.random.RandomState(0)
    f = rs.randint(4, size=(600, 3))
    codes = np.column_stack([f[:, 0] + 0.3 * rs.randn(600), f[:, 1] + 0.3 * f[:, 2],
                             rs.randn(600)])
    args = (codes[:400], f[:400], codes[400:], f[400:])
    a = dci_from_codes(*args, engine="exact", n_estimators=20)
    b = dci_from_codes(*args, engine="sklearn", n_estimators=20)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=0.02), key


def test_bad_engine() -> None:
    from analysis.errors import AnalysisError

    rs = np.random.RandomState(0)
    f = rs.randint(3, size=(100, 2))
    with pytest.raises(AnalysisError, match="engine"):
        dci_from_codes(rs.randn(100, 2), f, rs.randn(100, 2), f, engine="xgboost")


def _same_fit(x: np.ndarray, y: np.ndarray, max_bins: int = 256, n_estimators: int = 25):
    """Fit with the sorted search only and with the histogram search where it applies."""
    a = ExactGradientBoosting(n_estimators=n_estimators, seed=3, max_bins=0).fit(x, y)
    b = ExactGradientBoosting(n_estimators=n_estimators, seed=3, max_bins=max_bins).fit(x, y)
    assert a.hist_features_.size == 0
    np.testing.assert_array_equal(a._feature, b._feature)
    np.testing.assert_array_equal(a._threshold, b._threshold)
    np.testing.assert_allclose(a._value, b._value, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.feature_importances_, b.feature_importances_, atol=1e-12)
    assert np.array_equal(a.predict(x), b.predict(x))
    return a, b


@pytest.mark.parametrize("k", [2, 5])
def test_histogram_search_grows_the_sorted_search_trees(k) -> None:
    """Features with few distinct values: the histogram over those values finds the same
    splits, thresholds and leaf values as the scan of the sorted order."""
    x, y = _problem(600, 4, k, 2, discrete=True)
    x[:, 3] = np.floor(x[:, 3] * 20)  # a feature with ~100 values
    a, b = _same_fit(x, y)
    assert sorted(b.hist_features_) == [0, 1, 2, 3]
    assert (a._feature >= 0).sum() > 25  # the trees do split


def test_histogram_and_sorted_search_mixed_features() -> None:
    """Discrete features take the histogram search and continuous ones the sorted search, in
    one fit; a feature whose values lie within 1e-7 of each other stays on the sorted search
    (its merged values are not one bin each)."""
    rs = np.random.RandomState(5)
    n = 800
    f = rs.randint(4, size=(n, 2))
    y = f[:, 0] * 2 + (rs.rand(n) < 0.3)
    close = (f[:, 1] * 5e-8).astype(np.float32) + np.float32(0.25)  # 0.25 + {0, .5, 1, 1.5}e-7
    x = np.column_stack([f[:, 0] + 0.0, rs.randn(n), f[:, 1] * 0.5, close, rs.rand(n)])
    a, b = _same_fit(x, y, max_bins=64)
    assert sorted(b.hist_features_) == [0, 2]
    for model in (a, b):
        used = set(model._feature[model._feature >= 0].ravel())
        assert {0, 1}.issubset(used)  # both kinds of feature are split on


def test_max_bins_bounds_the_histogram_features() -> None:
    x, y = _problem(500, 3, 3, 4, discrete=False)
    x[:, 0] = np.round(x[:, 0] * 4)  # ~20 values
    x[:, 1] = np.round(x[:, 1] * 100)  # a few hundred values
    model = ExactGradientBoosting(n_estimators=2, max_bins=64).fit(x, y)
    assert list(model.hist_features_) == [0]


@pytest.mark.parametrize("k", [2, 4])
def test_training_scores_from_the_fit_are_decision_function(k) -> None:
    """DCI's train accuracy reads the scores summed during the fit: they equal a new pass."""
    x, y = _problem(300, 3, k, 6, discrete=False)
    model = ExactGradientBoosting(n_estimators=15).fit(x, y)
    np.testing.assert_array_equal(model.train_decision_, model.decision_function(x))
    assert np.array_equal(model.predict_from_decision(model.train_decision_), model.predict(x))


def test_decision_function_routes_as_the_fit() -> None:
    """Shallow leaves (a pure node stops early) and full-depth trees score as during the fit."""
    rs = np.random.RandomState(7)
    x = rs.randn(400, 3)
    y = (x[:, 0] > 0).astype(int) + (x[:, 0] > 1.0)  # class 2 splits off cleanly
    model = ExactGradientBoosting(n_estimators=10, max_depth=3).fit(x, y)
    assert (model._feature[:, :, :7] < 0).any()  # some inner position is a leaf
    np.testing.assert_array_equal(model.decision_function(x), model.train_decision_)
    deep = ExactGradientBoosting(n_estimators=3, max_depth=4).fit(x, y)
    np.testing.assert_array_equal(deep.decision_function(x), deep.train_decision_)
