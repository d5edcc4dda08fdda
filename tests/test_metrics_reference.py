"""Our metrics against a plain transcription of disentanglement_lib's loops.

The reference below follows dlib step by step: ``represent`` called on every small batch,
``sklearn.metrics.mutual_info_score``, codes x points layout, per-vote loops. Same seed, same
draws: the values must agree to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score

from analysis.metrics import METRICS
from analysis.metrics.synthetic import SyntheticData, factor_representation


@pytest.fixture(scope="module")
def data() -> SyntheticData:
    return SyntheticData((3, 5, 7))


@pytest.fixture(scope="module")
def rep(data):
    base = factor_representation(data, noise_dims=2)
    mix = np.random.RandomState(1).randn(5, 5)
    return lambda obs: (base(obs) @ mix).astype(np.float32)


def ref_factor_code(data, rep, num, rs, batch):
    codes, factors = [], []
    i = 0
    while i < num:
        b = min(num - i, batch)
        f, o = data.sample(b, rs)
        codes.append(rep(o))
        factors.append(f)
        i += b
    return np.vstack(codes).T, np.vstack(factors).T  # dlib layout: (codes, points)


def ref_discretize(target, bins=20):
    out = np.zeros_like(target)
    for i in range(target.shape[0]):
        out[i] = np.digitize(target[i], np.histogram(target[i], bins)[1][:-1])
    return out


def ref_mi(mus, ys):
    return np.array([[mutual_info_score(ys[j], mus[i]) for j in range(ys.shape[0])]
                     for i in range(mus.shape[0])])


def test_mig_matches_reference(data, rep) -> None:
    mus, ys = ref_factor_code(data, rep, 1000, np.random.RandomState(0), 16)
    m = ref_mi(ref_discretize(mus), ys)
    h = np.array([mutual_info_score(y, y) for y in ys])
    top = np.sort(m, axis=0)[::-1]
    expected = np.mean((top[0] - top[1]) / h)
    got = METRICS["mig"](data, rep, np.random.RandomState(0), num_train=1000)["mig"]
    assert got == pytest.approx(expected, abs=1e-12)


def test_beta_vae_matches_reference(data, rep) -> None:
    def batch(num, rs):
        xs, ys = [], []
        for _ in range(num):
            k = rs.randint(data.num_factors)
            f1 = data.sample_factors(8, rs)
            f2 = data.sample_factors(8, rs)
            f2[:, k] = f1[:, k]
            z1 = rep(data.sample_observations_from_factors(f1, rs))
            z2 = rep(data.sample_observations_from_factors(f2, rs))
            xs.append(np.mean(np.abs(z1 - z2), axis=0))
            ys.append(k)
        return np.array(xs), np.array(ys)

    rs = np.random.RandomState(0)
    x, y = batch(200, rs)
    model = LogisticRegression(random_state=rs).fit(x, y)
    train = model.score(x, y)
    xe, ye = batch(100, rs)
    expected = {"beta_vae_train": train, "beta_vae": model.score(xe, ye)}
    got = METRICS["beta_vae"](
        data, rep, np.random.RandomState(0), batch_size=8, num_train=200, num_eval=100
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_factor_vae_matches_reference(data, rep) -> None:
    rs = np.random.RandomState(0)
    obs = data.sample_observations(500, rs)
    gvar = np.var(np.vstack([rep(obs[i : i + 64]) for i in range(0, 500, 64)]), axis=0, ddof=1)
    active = np.sqrt(gvar) >= 0.05

    def votes(num):
        v = np.zeros((data.num_factors, gvar.shape[0]), dtype=np.int64)
        for _ in range(num):
            k = rs.randint(data.num_factors)
            f = data.sample_factors(16, rs)
            f[:, k] = f[0, k]
            lvar = np.var(rep(data.sample_observations_from_factors(f, rs)), axis=0, ddof=1)
            v[k, np.argmin(lvar[active] / gvar[active])] += 1
        return v

    tv = votes(150)
    cls = np.argmax(tv, axis=0)
    cols = np.arange(tv.shape[1])
    ev = votes(80)
    expected = {
        "factor_vae_train": tv[cls, cols].sum() / tv.sum(),
        "factor_vae": ev[cls, cols].sum() / ev.sum(),
    }
    got = METRICS["factor_vae"](
        data, rep, np.random.RandomState(0), batch_size=16, num_train=150, num_eval=80,
        num_variance_estimate=500,
    )
    assert got == pytest.approx(expected, abs=1e-12)


def test_unsupervised_and_irs_match_reference(data, rep) -> None:
    mus, ys = ref_factor_code(data, rep, 1000, np.random.RandomState(0), 16)
    mus = mus.astype(np.float64)
    cov = np.cov(mus)
    tc = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    w2 = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.diag(cov)[:, None]))
    mi = ref_mi(ref_discretize(mus), ref_discretize(mus))
    np.fill_diagonal(mi, 0)
    d = mus.shape[0]
    got = METRICS["unsupervised"](data, rep, np.random.RandomState(0), num_train=1000)
    assert got["gaussian_total_correlation"] == pytest.approx(tc, abs=1e-10)
    assert got["gaussian_wasserstein_correlation"] == pytest.approx(np.real(w2), abs=1e-8)
    assert got["mutual_info_score"] == pytest.approx(mi.sum() / (d * d - d), abs=1e-12)

    # IRS (dlib's scalable_disentanglement_score on (points, x) arrays).
    gen, lat = ref_discretize(ys.astype(float)).T, mus.T
    cum = np.zeros((lat.shape[1], gen.shape[1]))
    for i in range(gen.shape[1]):
        values = np.unique(gen[:, i])
        for v in values:
            m = gen[:, i] == v
            cum[:, i] += np.percentile(np.abs(lat[m] - lat[m].mean(axis=0)), 99, axis=0)
        cum[:, i] /= values.size
    maxdev = np.max(np.abs(lat - lat.mean(axis=0)), axis=0)
    expected = np.average((1 - cum / maxdev[:, None]).max(axis=1), weights=maxdev)
    got_irs = METRICS["irs"](data, rep, np.random.RandomState(0), num_train=1000)["irs"]
    assert got_irs == pytest.approx(expected, abs=1e-10)
