"""Shared machinery of the metrics: checks, sampling in dlib's order, discretising, MI.

Layout note: disentanglement_lib's cores use (codes x points) arrays; here every array is
(points x codes) and (points x factors), as scikit-learn does. Only the layout differs.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

import numpy as np

from analysis.errors import AnalysisError

log = logging.getLogger(__name__)

Represent = Callable[[np.ndarray], np.ndarray]


class NonFiniteCodesError(AnalysisError):
    """A representation holds NaN or inf values: the model diverged and cannot be scored (the
    trainer reports such a run as non-finite, by this class, not by the message's words)."""

#: Observations are handed to ``represent`` in chunks of at most this many bytes (at least one
#: dlib batch). Chunking does not change results: ``represent`` takes no random state, so only
#: the order of the draws from ``random_state`` matters, and that is dlib's.
CHUNK_BYTES = 64 * 2**20


class GroundTruthData(Protocol):
    """The part of disentanglement_lib's ``GroundTruthData`` interface that metrics use."""

    @property
    def num_factors(self) -> int: ...

    @property
    def factors_num_values(self) -> Any: ...

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray: ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray: ...

    def sample(
        self, num: int, random_state: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray: ...


class DerivedSampling:
    """``sample`` and ``sample_observations`` from ``sample_factors`` and
    ``sample_observations_from_factors``, as disentanglement_lib derives them (factors first,
    then the observations, from the same random state)."""

    def sample(
        self, num: int, random_state: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray]:
        factors = self.sample_factors(num, random_state)  # type: ignore[attr-defined]
        observations = self.sample_observations_from_factors(  # type: ignore[attr-defined]
            factors, random_state
        )
        return factors, observations

    def sample_observations(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self.sample(num, random_state)[1]


def check_random_state(random_state: Any, where: str) -> np.random.RandomState:
    """Return ``random_state`` if it is a ``numpy.random.RandomState``, else raise."""
    if not isinstance(random_state, np.random.RandomState):
        raise AnalysisError(
            f"{where}: random_state must be a numpy.random.RandomState (as disentanglement_lib "
            f"uses), got {type(random_state).__name__}; pass np.random.RandomState(seed)."
        )
    return random_state


def check_positive(where: str, **values: int) -> None:
    """Raise AnalysisError unless every keyword value is an int >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise AnalysisError(f"{where}: {name} must be an integer >= 1, got {value!r}.")


def check_codes(codes: Any, num: int | None, where: str) -> np.ndarray:
    """Validate a representation batch: 2-D, ``num`` rows, all finite.

    Args:
        codes: what ``represent`` returned; expected shape (num, num_codes).
        num: the expected number of rows, or None to skip that check.
        where: the caller's name, for the message.
    Returns:
        The codes as a numpy array (dtype kept).
    Raises:
        AnalysisError: on a wrong shape; NonFiniteCodesError on a NaN/inf value (a diverged
            model).
    """
    arr = np.asarray(codes)
    if arr.ndim != 2 or (num is not None and arr.shape[0] != num):
        want = f"({num}, num_codes)" if num is not None else "(num_points, num_codes)"
        raise AnalysisError(f"{where}: the representation has shape {arr.shape}, expected {want}.")
    if arr.shape[1] < 1:
        raise AnalysisError(f"{where}: the representation has no latent dimensions.")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise AnalysisError(f"{where}: the representation must be real numbers, got {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise NonFiniteCodesError(
                f"{where}: the representation has {int(bad.sum())} non-finite values (NaN/inf) "
                f"in {arr.shape[0]} codes; a diverged model cannot be scored."
            )
    return arr


def check_factors(factors: Any, num: int, where: str) -> np.ndarray:
    """Validate factor labels: (num, num_factors) integers (or integral floats)."""
    arr = np.asarray(factors)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != num:
        raise AnalysisError(
            f"{where}: factors have shape {arr.shape}, expected ({num}, num_factors)."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise AnalysisError(
                f"{where}: factors must be integer class indices (discretise continuous "
                "factors first)."
            )
        arr = arr.astype(np.int64)
    return arr


class CodeCollector:
    """Collects observation batches and calls ``represent`` on large chunks of them.

    The caller draws observations in disentanglement_lib's batch sizes (which fixes the order of
    the draws from the random state) and gets the codes for all of them, in order, from
    :meth:`codes`. ``represent`` sees chunks of up to :data:`CHUNK_BYTES` of observations.
    """

    def __init__(self, represent: Represent, where: str) -> None:
        self._represent = represent
        self._where = where
        self._pending: list[np.ndarray] = []
        self._pending_bytes = 0
        self._done: list[np.ndarray] = []
        self._num_codes: int | None = None

    def add(self, observations: np.ndarray) -> None:
        """Queue one batch of observations (N, ...)."""
        obs = np.asarray(observations)
        self._pending.append(obs)
        self._pending_bytes += obs.nbytes
        if self._pending_bytes >= CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        obs = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending, self._pending_bytes = [], 0
        codes = check_codes(self._represent(obs), len(obs), self._where)
        if self._num_codes is not None and codes.shape[1] != self._num_codes:
            raise AnalysisError(
                f"{self._where}: the representation changed width from {self._num_codes} to "
                f"{codes.shape[1]} codes between calls."
            )
        self._num_codes = codes.shape[1]
        self._done.append(codes)

    def codes(self) -> np.ndarray:
        """All codes so far, (num_observations, num_codes), in the order they were added."""
        self._flush()
        if not self._done:
            raise AnalysisError(f"{self._where}: no observations were drawn.")
        out = self._done[0] if len(self._done) == 1 else np.concatenate(self._done)
        self._done = [out]
        return out


def sample_codes(
    data: GroundTruthData,
    represent: Represent,
    num_points: int,
    random_state: np.random.RandomState,
    batch_size: int,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:
    """dlib's ``generate_batch_factor_code``: draw ``data.sample`` in batches of ``batch_size``.

    Returns:
        codes (num_points, num_codes) and factors (num_points, num_factors) int64. (dlib returns
        both transposed.)
    """
    collector = CodeCollector(represent, where)
    factors = []
    done = 0
    while done < num_points:
        num = min(num_points - done, batch_size)
        f, obs = data.sample(num, random_state)
        factors.append(np.asarray(f))
        collector.add(obs)
        done += num
    codes = collector.codes()
    return codes, check_factors(np.concatenate(factors), num_points, where)


def varying_factors(factors: np.ndarray, where: str) -> np.ndarray:
    """Indices of the factors that take more than one value in ``factors`` (N, F).

    A factor with a single value carries no information and makes several metrics undefined
    (MIG divides by its entropy 0; GradientBoosting refuses one class). Such factors are left
    out, with a warning. If none varies, AnalysisError.
    """
    varies = np.array([np.unique(factors[:, j]).size > 1 for j in range(factors.shape[1])])
    if not varies.any():
        raise AnalysisError(
            f"{where}: every factor takes a single value in the sample; nothing to score."
        )
    if not varies.all():
        log.warning(
            "%s: factor(s) %s take a single value in the sample and are left out.",
            where,
            np.flatnonzero(~varies).tolist(),
        )
    return np.flatnonzero(varies)


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """dlib's histogram discretizer, per column: equal-width bins from min to max.

    Args:
        codes: (N, D) values.
        num_bins: bins per column.
    Returns:
        (N, D) int64 labels in 1..num_bins (a constant column gets a single label).
    """
    codes = np.asarray(codes, dtype=np.float64) if codes.dtype.kind not in "fc" else codes
    out = np.empty(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        col = codes[:, i]
        edges = np.histogram(col, num_bins)[1]
        out[:, i] = np.digitize(col, edges[:-1])
    return out


def _dense_labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(x, return_inverse=True)
    return inv.ravel(), uniq.size


def _mi_from_dense(ia: np.ndarray, na: int, ib: np.ndarray, nb: int) -> float:
    n = ia.size
    joint = np.bincount(ia * nb + ib, minlength=na * nb).astype(np.float64)
    nz = joint > 0
    pa = np.bincount(ia, minlength=na).astype(np.float64)
    pb = np.bincount(ib, minlength=nb).astype(np.float64)
    outer = np.outer(pa, pb).ravel()[nz]
    c = joint[nz]
    mi = float(np.sum(c / n * (np.log(c) - np.log(outer) + np.log(n))))
    return max(mi, 0.0)


def mutual_info_matrix(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    """Plug-in MI (nats) between every column of ``labels_a`` (N, A) and of ``labels_b`` (N, B):
    (A, B). The estimate of ``sklearn.metrics.mutual_info_score`` (contingency table), computed
    with ``np.bincount``; values agree to floating-point rounding."""
    dense_a = [_dense_labels(labels_a[:, i]) for i in range(labels_a.shape[1])]
    dense_b = [_dense_labels(labels_b[:, j]) for j in range(labels_b.shape[1])]
    out = np.zeros((len(dense_a), len(dense_b)))
    for i, (ia, na) in enumerate(dense_a):
        for j, (ib, nb) in enumerate(dense_b):
            if na > 1 and nb > 1:
                out[i, j] = _mi_from_dense(ia, na, ib, nb)
    return out


def entropy(labels: np.ndarray) -> np.ndarray:
    """Plug-in entropy (nats) of each column of ``labels`` (N, F): (F,)."""
    out = np.zeros(labels.shape[1])
    for j in range(labels.shape[1]):
        _, counts = np.unique(labels[:, j], return_counts=True)
        p = counts / counts.sum()
        out[j] = float(-np.sum(p * np.log(p)))
    return out

