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


def test_engine_choice_and_bad_engine() -> None:
    from analysis.errors import AnalysisError
    from analysis.metrics._dci import choose_engine

    rs = np.random.RandomState(0)
    assert choose_engine(rs.randn(500, 3)) == "exact"
    assert choose_engine(rs.randint(5, size=(500, 3)).astype(float)) == "sklearn"
    f = rs.randint(3, size=(100, 2))
    with pytest.raises(AnalysisError, match="engine"):
        dci_from_codes(rs.randn(100, 2), f, rs.randn(100, 2), f, engine="xgboost")
