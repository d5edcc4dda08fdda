"""UDR (analysis.metrics._udr): known answers, dlib's edge cases, the shared-sample entry point."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.metrics import NonFiniteCodesError, evaluate_group, udr, udr_from_codes
from analysis.metrics._udr import relative_strength
from analysis.metrics.synthetic import SyntheticData

# A full 5^4 grid: its columns are exactly uncorrelated, in values and in ranks.
GRID = np.array(list(itertools.product(range(5), repeat=4)), dtype=np.float64)
ONES = np.ones(4)
IDENTICAL = {"lasso": 0.9, "spearman": 1.0}  # lasso: 1 - alpha on uncorrelated inputs


def scores(codes, kl, **kw) -> list[float]:
    return udr_from_codes(codes, kl, **kw)["model_scores"]


def test_relative_strength_as_dlibs_tests() -> None:
    assert relative_strength(np.eye(3)) == 1.0
    assert relative_strength(np.array([[1.0, 1, 0], [1, 1, 0], [0, 0, 1]])) == pytest.approx(2 / 3)
    assert relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)
    assert relative_strength(np.zeros((3, 3))) == 0.0  # 0/0 counts 0
    assert np.isnan(relative_strength(np.zeros((0, 3))))


@pytest.mark.parametrize("correlation", ["lasso", "spearman"])
def test_identical_and_permuted_sign_flipped_models_agree(correlation) -> None:
    flipped = GRID[:, [2, 0, 3, 1]] * np.array([1.0, -1.0, 1.0, -1.0])
    for other in (GRID, flipped):
        got = udr_from_codes([GRID, other], [ONES, ONES], correlation=correlation)
        assert got["model_scores"] == pytest.approx([IDENTICAL[correlation]] * 2, abs=1e-12)
        assert np.isnan(np.diag(got["pairwise"])).all()
        assert got["num_kept"] == [4, 4]


@pytest.mark.parametrize(("correlation", "floor"), [("lasso", 0.0), ("spearman", 0.03)])
def test_independent_random_codes_score_near_the_floor(correlation, floor) -> None:
    rs = np.random.RandomState(0)
    a, b = rs.randn(1000, 5), rs.randn(1000, 5)
    got = scores([a, b], [np.ones(5)] * 2, correlation=correlation)
    assert all(0 <= s <= floor for s in got)
    # ... and far below agreeing models, also when a third model is a copy of the first.
    three = udr_from_codes([a, b, a.copy()], [np.ones(5)] * 3, correlation=correlation)
    pair, got = three["pairwise"], three["model_scores"]
    assert pair[2, 0] > 0.85 and pair[1, 0] <= floor  # the copy agrees, the other does not
    assert got[0] == pytest.approx((pair[1, 0] + pair[2, 0]) / 2)  # the median of two
    assert got[1] <= floor


def test_dead_latents_dlibs_way() -> None:
    rs = np.random.RandomState(1)
    codes = np.c_[GRID[:, :3], rs.randn(len(GRID), 2)]  # two latents of noise ...
    kl = np.array([1.0, 1.0, 1.0, 0.0, 0.005])  # ... that are dead (KL <= 0.01)
    for corr, value in IDENTICAL.items():
        assert scores([codes, codes], [kl, kl], correlation=corr) == pytest.approx(
            [value] * 2)  # filtered out: they cost nothing
    unfiltered = {c: scores([codes, codes], [kl, kl], correlation=c, filter_low_kl=False)[0]
                  for c in IDENTICAL}
    assert unfiltered["lasso"] == pytest.approx(0.9 * 3 / 5)  # zero rows and columns count 0
    assert unfiltered["spearman"] == 0.0  # a dead latent's rho is NaN, and max() keeps NaN
    # The zeroing threshold is dlib's fixed 0.01 even when kl_threshold is lower: the latent
    # with KL 0.005 is zeroed but kept, a row and a column of zeros.
    low = scores([codes, codes], [kl, kl], correlation="lasso", kl_threshold=0.001)[0]
    assert low == pytest.approx(0.9 * 3 / 4)


def test_a_pair_with_no_kept_latent_is_nan() -> None:
    dead = np.full(4, 0.001)
    got = udr_from_codes([GRID, GRID.copy(), GRID[:, ::-1].copy()], [ONES, ONES, dead],
                         correlation="spearman")
    pair = got["pairwise"]
    assert np.isnan(pair[2, 0]) and np.isnan(pair[0, 2]) and np.isnan(pair[1, 2])
    assert got["model_scores"][:2] == pytest.approx([1.0, 1.0])  # the median of the rest
    assert np.isnan(got["model_scores"][2]) and got["num_kept"] == [4, 4, 0]
    both = scores([GRID, GRID], [dead, dead])
    assert np.isnan(both).all()


def test_udr_from_codes_refuses_bad_input() -> None:
    with pytest.raises(AnalysisError, match="2 or more models"):
        udr_from_codes([GRID], [ONES])
    with pytest.raises(AnalysisError, match="correlation must be one of"):
        udr_from_codes([GRID, GRID], [ONES, ONES], correlation="pearson")
    with pytest.raises(AnalysisError, match="expected"):
        udr_from_codes([GRID, GRID[:10]], [ONES, ONES])
    bad = GRID.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NonFiniteCodesError):
        udr_from_codes([GRID, bad], [ONES, ONES])
    with pytest.raises(NonFiniteCodesError, match="non-finite KL"):
        udr_from_codes([GRID, GRID], [ONES, np.array([1.0, np.inf, 1, 1])])


class _Encoder:
    """Observations (N, 1, F, 1) -> (mean, logvar): the factor values, optionally permuted and
    sign-flipped, with a known variance."""

    def __init__(self, perm=None, signs=None, logvar=-1.0) -> None:
        self.perm, self.signs, self.logvar, self.calls = perm, signs, logvar, []

    def __call__(self, obs: np.ndarray):
        self.calls.append(len(obs))
        mean = obs[:, 0, :, 0].astype(np.float64)
        if self.perm is not None:
            mean = mean[:, self.perm] * self.signs
        return mean, np.full(mean.shape, self.logvar)


def test_udr_draws_one_shared_sample_as_dlib_and_averages_kl() -> None:
    data = SyntheticData((5, 6, 7))
    a, b = _Encoder(), _Encoder(perm=[2, 0, 1], signs=np.array([-1.0, 1, -1]), logvar=0.0)
    got = udr(data, [a, b], np.random.RandomState(3), batch_size=10, num_data_points=200,
              correlation="spearman")
    rs = np.random.RandomState(3)
    obs = np.concatenate([data.sample_observations(10, rs) for _ in range(20)])
    mean_a, mean_b = a(obs)[0], b(obs)[0]
    assert got["kl"][0] == pytest.approx(np.mean(0.5 * (mean_a**2 + np.exp(-1.0)), axis=0))
    assert got["kl"][1] == pytest.approx(np.mean(0.5 * mean_b**2, axis=0))
    ref = udr_from_codes([mean_a, mean_b], got["kl"], correlation="spearman")
    assert got["model_scores"] == ref["model_scores"]
    assert got["model_scores"][0] > 0.8  # the same latents, up to order and sign
    assert a.calls[0] == 200  # the batches reach the encoder as one chunk
    with pytest.raises(AnalysisError, match="multiple of batch_size"):
        udr(data, [a, b], np.random.RandomState(0), batch_size=16, num_data_points=100)
    with pytest.raises(AnalysisError, match=r"must return \(mean, logvar\)"):
        udr(data, [a, lambda o: o[:, 0, :, 0]], np.random.RandomState(0), batch_size=10,
            num_data_points=20)


def test_evaluate_group_runs_udr_with_the_protocol_budgets() -> None:
    data = SyntheticData((5, 6, 7))
    fns = [_Encoder(), _Encoder(perm=[1, 2, 0], signs=np.ones(3)), _Encoder()]
    out = evaluate_group(data, fns, metric="udr_lasso", protocol="fast", seed=0)
    assert fns[0].calls == [500]  # fast: 500 points
    assert out["udr_lasso"] == pytest.approx(np.mean(out["model_scores"]))
    assert len(out["model_scores"]) == 3 and out["udr_lasso"] > 0.8
    spear = evaluate_group(data, fns, metric="udr_spearman", protocol="fast", seed=0,
                           num_data_points=300)
    assert fns[0].calls[-1] == 300 and spear["udr_spearman"] > 0.9
