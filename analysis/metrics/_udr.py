"""Unsupervised Disentanglement Ranking (Duan et al., ICLR 2020), as disentanglement_lib's
``evaluation/udr/metrics/udr.py`` (``compute_udr_sklearn``) computes it.

Models of one configuration trained with different seeds agree on their latents (up to
permutation and sign) when they disentangle; UDR measures that agreement without labels.

Steps (dlib's, in its order):
1. One shared sample: ``num_data_points`` observations drawn as
   ``data.sample_observations(batch_size, random_state)`` batch after batch; every model
   encodes the same observations. Each latent's KL to the prior is averaged over the batches.
2. Each model's codes are standardised (scikit-learn's ``StandardScaler``: mean 0, std 1 with
   ddof 0, a constant latent stays 0), then multiplied by ``kl > 0.01``: latents with a mean KL of
   at most 0.01 become 0. That 0.01 is fixed in dlib even when ``kl_threshold`` changes. The
   kept latents of a model are those with ``kl > kl_threshold``.
3. For every ordered pair (i, j), i != j, a (d_i, d_j) matrix R of latent agreement:
   ``lasso``: ``|coef|`` of ``Lasso(alpha=0.1)`` fitted from i's codes to j's, transposed;
   ``spearman``: ``|Spearman rho|`` of every pair of latents (NaN for a constant latent).
   With ``filter_low_kl``, R keeps the rows of i's kept latents and the columns of j's.
4. The pair's score d(i, j) is dlib's "relative strength": per axis, the mean of
   ``nan_to_num(max(R)^2 / sum(R))`` (a NaN ratio, e.g. an all-zero or NaN column, counts as
   0), and the mean of the two axes.
5. Model i's score: the median of d(j, i) over the other models j.

Edge cases, dlib's and ours (tested):
* **Dead latents** (KL <= 0.01): zeroed before the correlation, so they agree with nothing.
  With ``filter_low_kl`` they are also dropped from R, so dead latents cost nothing. Without
  it, under ``lasso`` each dead latent adds a row and a column of zeros (ratios 0/0, counted 0):
  3 agreeing latents and 2 dead ones score 3/5 of the agreement. Under ``spearman`` a dead
  latent's rho is NaN, and ``max`` over an axis that holds a NaN is NaN, so one dead latent
  turns every ratio into 0 and the pair scores 0 (dlib's arithmetic, kept).
* **A pair with no kept latent** (every latent of i or of j has KL <= ``kl_threshold``): R is
  empty. dlib crashes there (numpy: "zero-size array to reduction operation maximum"); here the
  pair's score is NaN. A model's score is the median over its non-NaN pairs, NaN if it has none.
* ``pairwise[i, i]`` is NaN (dlib leaves a placeholder 0 there; it is not a score).
* Lasso's coefficients of correlated latents may exceed 1, so a lasso score may too; Spearman
  scores lie in [0, 1].
* Known answers: for two identical codes with uncorrelated latents, or one a permuted and
  sign-flipped copy of the other, R is diagonal: Spearman scores 1, Lasso 0.9 (standardised
  uncorrelated inputs give the coefficient 1 - alpha; dlib's own test accepts 0.8 to 1).
  Independent random codes: Lasso 0 (every |correlation| < alpha, so every coefficient is 0),
  Spearman about 0.014 for 5 latents and 1000 points (the |rho| noise of order 1/sqrt(N)).
Beyond dlib: the models may have different numbers of latents (dlib asserts equal shapes).

Representation interface of :func:`udr`: each function maps observations (B, H, W, C) to the
encoder's ``(mean, logvar)``, two (B, D) arrays; UDR scores the means, and each latent's KL is
``0.5 * (mean^2 + exp(logvar) - logvar - 1)`` averaged over the points, as dlib's
``evaluation/udr/evaluate.py`` computes it (per batch, then over batches: the same number, as
the batches are of equal size).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import scipy.stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from sklearn.preprocessing import StandardScaler

from analysis.errors import AnalysisError
from analysis.metrics._utils import (
    CHUNK_BYTES,
    NonFiniteCodesError,
    check_codes,
    check_positive,
    check_random_state,
)

#: dlib's fixed threshold below which a latent's codes are zeroed (independent of kl_threshold).
DEAD_KL = 0.01
CORRELATIONS = ("lasso", "spearman")


def relative_strength(corr: np.ndarray) -> float:
    """dlib's ``relative_strength_disentanglement`` of an agreement matrix R (a, b): the mean
    over both axes of ``mean(nan_to_num(max(R)^2 / sum(R)))``; NaN if R is empty."""
    if corr.size == 0:
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_axis = [
            np.mean(np.nan_to_num(np.max(corr, axis=axis) ** 2 / np.sum(corr, axis=axis)))
            for axis in (0, 1)
        ]
    return float((per_axis[0] + per_axis[1]) / 2)


def _lasso(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    model = Lasso(alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef = np.asarray(model.coef_).reshape(y.shape[1], x.shape[1])  # (d_j, d_i)
    return np.abs(coef).T


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|rho| of every column of x against every column of y; NaN where a column is constant
    (what ``scipy.stats.spearmanr`` gives, without its per-pair calls)."""
    rx = scipy.stats.rankdata(x, axis=0)
    ry = scipy.stats.rankdata(y, axis=0)
    rx = rx - rx.mean(axis=0)
    ry = ry - ry.mean(axis=0)
    norm = np.sqrt(np.sum(rx**2, axis=0))[:, None] * np.sqrt(np.sum(ry**2, axis=0))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (rx.T @ ry) / np.where(norm > 0, norm, np.nan)
    return np.abs(np.clip(rho, -1.0, 1.0))


def udr_from_codes(
    codes: Sequence[np.ndarray],
    kl: Sequence[np.ndarray],
    *,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
) -> dict[str, Any]:
    """UDR of M models on the same N observations (dlib's ``compute_udr_sklearn`` core).

    Args:
        codes: M arrays (N, d_m): each model's encoder means, the same observations in the
            same order.
        kl: M arrays (d_m,): each latent's mean KL to the prior.
        correlation: ``"lasso"`` or ``"spearman"``.
        filter_low_kl: score only the latents with ``kl > kl_threshold``.
        kl_threshold: that threshold (the zeroing of codes uses dlib's fixed 0.01).
    Returns:
        ``model_scores``: M floats (NaN for a model with no scorable pair); ``pairwise``:
        (M, M) array, ``[i, j]`` = d(i, j), NaN on the diagonal and for a pair with no kept
        latent; ``num_kept``: M ints, the latents each model keeps.
    Raises:
        AnalysisError: fewer than 2 models, mismatched shapes, non-finite values, an unknown
            correlation.
    """
    if correlation not in CORRELATIONS:
        raise AnalysisError(
            f"udr: correlation must be one of {', '.join(CORRELATIONS)}, got {correlation!r}."
        )
    if len(codes) < 2 or len(codes) != len(kl):
        raise AnalysisError(
            f"udr: needs codes and kl of the same 2 or more models, got {len(codes)} codes "
            f"and {len(kl)} kl vectors."
        )
    reps = [check_codes(c, None, f"udr (model {m})").astype(np.float64)
            for m, c in enumerate(codes)]
    num = reps[0].shape[0]
    kls = []
    for m, (rep, k) in enumerate(zip(reps, kl, strict=True)):
        k = np.asarray(k, dtype=np.float64).reshape(-1)
        if rep.shape[0] != num or k.shape != (rep.shape[1],):
            raise AnalysisError(
                f"udr: model {m} has codes {rep.shape} and kl {np.shape(kl[m])}; expected "
                f"({num}, d) codes and d KL values."
            )
        if not np.isfinite(k).all():
            raise NonFiniteCodesError(
                f"udr: model {m} has {int((~np.isfinite(k)).sum())} non-finite KL values; a "
                "diverged model cannot be scored."
            )
        kls.append(k)
    scaled = [StandardScaler().fit_transform(r) * (k > DEAD_KL) for r, k in zip(reps, kls,
                                                                             strict=True)]
    keep = [k > kl_threshold for k in kls]
    num_models = len(scaled)
    pairwise = np.full((num_models, num_models), np.nan)
    for i in range(num_models):
        for j in range(num_models):
            if i == j:
                continue
            fit = _lasso if correlation == "lasso" else _spearman
            corr = fit(scaled[i], scaled[j])
            if filter_low_kl:
                corr = corr[keep[i]][:, keep[j]]
            pairwise[i, j] = relative_strength(corr)
    scores = []
    for i in range(num_models):
        column = np.delete(pairwise[:, i], i)
        column = column[np.isfinite(column)]
        scores.append(float(np.median(column)) if column.size else float("nan"))
    return {"model_scores": scores, "pairwise": pairwise,
            "num_kept": [int(k.sum()) for k in keep]}


def _encode(fn: Callable[[np.ndarray], Any], obs: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    out = fn(obs)
    if not isinstance(out, tuple) or len(out) != 2:
        raise AnalysisError(
            f"udr: representation {m} must return (mean, logvar), two (N, D) arrays; got "
            f"{type(out).__name__}."
        )
    mean = check_codes(out[0], len(obs), f"udr (model {m} mean)")
    logvar = check_codes(out[1], len(obs), f"udr (model {m} logvar)")
    if logvar.shape != mean.shape:
        raise AnalysisError(
            f"udr: model {m} gave mean {mean.shape} and logvar {logvar.shape}; expected equal."
        )
    return mean.astype(np.float64), logvar.astype(np.float64)


def udr(
    data: Any,
    represent_fns: Sequence[Callable[[np.ndarray], Any]],
    random_state: np.random.RandomState,
    *,
    batch_size: int = 10,
    num_data_points: int = 1000,
    correlation: str = "lasso",
    filter_low_kl: bool = True,
    kl_threshold: float = 0.01,
) -> dict[str, Any]:
    """UDR of several models on one shared sample (dlib's ``compute_udr_sklearn``).

    Defaults are dlib's UDR config (``config/tests/methods/udr/udr.gin``: batches of 10, 1000
    points, lasso, the KL filter at 0.01).

    Args:
        data: anything with ``sample_observations(num, random_state)`` (no factors needed).
        represent_fns: one function per model, observations (B, H, W, C) -> (mean, logvar),
            two (B, D) arrays (see the module docstring).
        random_state: draws the observations, batch after batch, as dlib does.
        batch_size: observations per draw; ``num_data_points`` must be a multiple of it.
        num_data_points: the shared sample's size.
        correlation, filter_low_kl, kl_threshold: as :func:`udr_from_codes`.
    Returns:
        As :func:`udr_from_codes`, plus ``kl``: M arrays (D,) of the latents' mean KL.
    Raises:
        AnalysisError: bad budgets, fewer than 2 models, a representation of the wrong form,
            non-finite values (:class:`~analysis.metrics.NonFiniteCodesError`).
    """
    check_random_state(random_state, "udr")
    check_positive("udr", batch_size=batch_size, num_data_points=num_data_points)
    if num_data_points % batch_size:
        raise AnalysisError(
            f"udr: num_data_points ({num_data_points}) must be a multiple of batch_size "
            f"({batch_size}), as in disentanglement_lib."
        )
    if len(represent_fns) < 2:
        raise AnalysisError(f"udr: needs 2 or more models, got {len(represent_fns)}.")
    means: list[list[np.ndarray]] = [[] for _ in represent_fns]
    kl_sums: list[Any] = [0.0 for _ in represent_fns]
    pending: list[np.ndarray] = []

    def flush() -> None:
        obs = np.concatenate(pending)
        pending.clear()
        for m, fn in enumerate(represent_fns):
            mean, logvar = _encode(fn, obs, m)
            means[m].append(mean)
            kl_sums[m] = kl_sums[m] + np.sum(
                0.5 * (mean**2 + np.exp(logvar) - logvar - 1), axis=0)

    size = 0
    for _ in range(num_data_points // batch_size):
        pending.append(np.asarray(data.sample_observations(batch_size, random_state)))
        size += pending[-1].nbytes
        if size >= CHUNK_BYTES:
            flush()
            size = 0
    if pending:
        flush()
    codes = [np.concatenate(m) for m in means]
    kl = [np.asarray(s) / num_data_points for s in kl_sums]
    out = udr_from_codes(codes, kl, correlation=correlation, filter_low_kl=filter_low_kl,
                         kl_threshold=kl_threshold)
    out["kl"] = kl
    return out
