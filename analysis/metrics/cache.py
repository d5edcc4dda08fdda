"""Representation cache: each distinct image is encoded at most once per evaluation.

disentanglement_lib's BetaVAE and FactorVAE budgets alone draw about three million images; on
dSprites (737,280 images) fewer than a quarter of them are distinct. :class:`CachedRepresentation`
gives the metric functions a proxy data set whose "observations" are dataset row indices
(shape (N, 1) int64) and a ``represent`` that looks the codes up, encoding the rows it has not
seen yet in large batches of uint8 images. The metric functions are unchanged: they draw from
the random state exactly as with the real data set, and hand ``represent`` all the
observations of a metric at once, so within a metric every distinct image is encoded once and
across metrics the cache keeps them.

Valid when an observation is a function of its factors (``sample_observations_from_factors``
draws nothing from the random state and equals ``observations_at(index_of(factors))``); this
is checked on construction.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._utils import DerivedSampling

log = logging.getLogger(__name__)

Encode = Callable[[np.ndarray], Any]


class _IndexData(DerivedSampling):
    """The ground-truth interface with dataset row indices (N, 1) int64 as observations."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self.factors_num_values = data.factors_num_values
        self.observation_shape = (1,)

    @property
    def num_factors(self) -> int:
        return int(self._data.num_factors)

    def __len__(self) -> int:
        return len(self._data)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        return self._data.sample_factors(num, random_state)

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        return np.asarray(self._data.index_of(factors), dtype=np.int64).reshape(-1, 1)


def _check_deterministic(data: Any) -> None:
    """Refuse data sets whose observations draw from the random state (e.g. noisy dSprites)."""
    for name in ("index_of", "images_at", "sample_factors", "sample_observations_from_factors"):
        if not callable(getattr(data, name, None)):
            raise AnalysisError(
                f"CachedRepresentation: the data set has no {name}(); it needs the tune.data "
                "interface (index_of, images_at, sample_factors, ...)."
            )
    probe = np.random.RandomState(12345)
    factors = data.sample_factors(4, probe)
    before = probe.get_state()[1].copy(), probe.get_state()[2]
    obs = np.asarray(data.sample_observations_from_factors(factors, probe))
    after = probe.get_state()[1], probe.get_state()[2]
    if not (np.array_equal(before[0], after[0]) and before[1] == after[1]):
        raise AnalysisError(
            "CachedRepresentation: this data set's observations draw from the random state "
            "(random noise or colour); they are not a function of the factors, so they cannot "
            "be cached. Evaluate without the cache."
        )
    images = np.asarray(data.images_at(data.index_of(factors)))
    if images.shape != obs.shape:
        raise AnalysisError(
            f"CachedRepresentation: images_at gives shape {images.shape} but the observations "
            f"have shape {obs.shape}."
        )


class CachedRepresentation:
    """Encode each distinct dataset image at most once; give the metrics index-based stand-ins.

    Args:
        data: ground-truth data with ``index_of`` and ``images_at`` (the ``tune.data`` interface).
        encode: images (N, H, W, C) uint8 -> codes (N, D); or -> (mu, logvar) when ``sample``.
            The trainer passes a function that runs the torch encoder on the trial's device.
        batch_size: images per ``encode`` call.
        sample: score sampled codes z = mu + exp(logvar / 2) * eps (the paper's protocol):
            mu and logvar are cached and fresh noise is drawn at every lookup from ``rng``.
        rng: noise generator when ``sample`` (a ``numpy.random.Generator``); default seed 0.

    Attributes:
        data: the proxy data set to pass to the metric functions.
        num_encoded: images encoded so far.
        num_lookups: codes looked up so far.

    Example:
        >>> cache = CachedRepresentation(data, encode)
        >>> scores = evaluate(cache.data, cache.represent, seed=0)
    """

    def __init__(
        self,
        data: Any,
        encode: Encode,
        *,
        batch_size: int = 2048,
        sample: bool = False,
        rng: np.random.Generator | None = None,
    ) -> None:
        if not callable(encode):
            raise AnalysisError("CachedRepresentation: encode must be callable.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise AnalysisError(
                f"CachedRepresentation: batch_size must be an integer >= 1, got {batch_size!r}."
            )
        _check_deterministic(data)
        self._source = data
        self._encode = encode
        self._batch_size = batch_size
        self._sample = bool(sample)
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self.data = _IndexData(data)
        self._size = len(data)
        self._have = np.zeros(self._size, dtype=bool)
        self._mu: np.ndarray | None = None
        self._logvar: np.ndarray | None = None
        self.num_encoded = 0
        self.num_lookups = 0
        self._lock = threading.Lock()  # evaluate(n_jobs > 1) looks codes up from threads

    def _store(self, rows: np.ndarray, out: Any) -> None:
        if self._sample:
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise AnalysisError(
                    "CachedRepresentation(sample=True): encode must return (mu, logvar)."
                )
            mu, logvar = (np.asarray(o) for o in out)
        else:
            if isinstance(out, (tuple, list)):
                raise AnalysisError(
                    "CachedRepresentation: encode returned a tuple; pass sample=True to score "
                    "sampled codes from (mu, logvar), or return the codes alone."
                )
            mu, logvar = np.asarray(out), None
        if mu.ndim != 2 or mu.shape[0] != rows.size:
            raise AnalysisError(
                f"CachedRepresentation: encode returned shape {mu.shape} for {rows.size} images; "
                "expected (num_images, num_latents)."
            )
        if self._mu is None:
            self._mu = np.zeros((self._size, mu.shape[1]), dtype=mu.dtype)
            if logvar is not None:
                self._logvar = np.zeros((self._size, mu.shape[1]), dtype=logvar.dtype)
        self._mu[rows] = mu
        if logvar is not None and self._logvar is not None:
            self._logvar[rows] = logvar

    def prefetch(self, indices: np.ndarray) -> int:
        """Encode the rows among ``indices`` not cached yet; returns how many were encoded."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= self._size):
            raise AnalysisError(
                f"CachedRepresentation: row index out of range [0, {self._size})."
            )
        missing = np.unique(idx[~self._have[idx]])  # sorted: sequential reads of a memmap
        for start in range(0, missing.size, self._batch_size):
            rows = missing[start : start + self._batch_size]
            self._store(rows, self._encode(self._source.images_at(rows)))
            self._have[rows] = True
        self.num_encoded += int(missing.size)
        if missing.size:
            log.debug("encoded %d new images (%d cached)", missing.size, int(self._have.sum()))
        return int(missing.size)

    def represent(self, observations: np.ndarray) -> np.ndarray:
        """Codes (N, D) of proxy observations (N, 1) (dataset row indices). Thread-safe."""
        with self._lock:
            return self._represent(observations)

    def _represent(self, observations: np.ndarray) -> np.ndarray:
        idx = np.asarray(observations).reshape(-1).astype(np.int64)
        self.prefetch(idx)
        self.num_lookups += int(idx.size)
        if self._mu is None:
            return np.zeros((0, 0), dtype=np.float32)
        mu = self._mu[idx]
        if not self._sample:
            return mu
        logvar = self._logvar if self._logvar is not None else np.zeros_like(self._mu)
        eps = self._rng.standard_normal(mu.shape).astype(mu.dtype, copy=False)
        return mu + np.exp(0.5 * logvar[idx]) * eps
