"""A small synthetic ground-truth data set and reference representations, for tests and benchmarks.

``SyntheticData`` has the ground-truth interface of ``tune.data`` (disentanglement_lib's, plus
indexing): a full factor grid whose "image" of shape (1, num_factors, 1) holds each factor's
value scaled to [0, 1] (stored as uint8, like the real data sets). The representations are
numpy callables ``observations (N, 1, F, 1) float32 -> codes (N, D)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._utils import DerivedSampling, Represent


class SyntheticData(DerivedSampling):
    """Full grid over factors with the given numbers of values; observations encode factors.

    Args:
        factors_num_values: number of values of each factor, e.g. ``(3, 6, 10, 8)``.
    """

    def __init__(self, factors_num_values: Sequence[int] = (3, 6, 10, 8)) -> None:
        sizes = tuple(int(k) for k in factors_num_values)
        if not sizes or min(sizes) < 1:
            raise AnalysisError(f"SyntheticData: factor sizes must be >= 1, got {sizes}.")
        self.factors_num_values = sizes
        self.factor_names = tuple(f"factor{j}" for j in range(len(sizes)))
        self.observation_shape = (1, len(sizes), 1)
        self._scale = np.array([max(k - 1, 1) for k in sizes], dtype=np.float64)

    @property
    def num_factors(self) -> int:
        return len(self.factors_num_values)

    def __len__(self) -> int:
        return int(np.prod(self.factors_num_values))

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """(num, F) int64, one factor after another (as disentanglement_lib's data sets)."""
        out = np.zeros((num, self.num_factors), dtype=np.int64)
        for j, k in enumerate(self.factors_num_values):
            out[:, j] = random_state.randint(k, size=num)
        return out

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """Dataset row of each factor vector, (N,) int64."""
        factors = np.asarray(factors, dtype=np.int64)
        return np.ravel_multi_index(factors.T, self.factors_num_values).astype(np.int64)

    def factors_of(self, indices: np.ndarray) -> np.ndarray:
        """Factor vectors (N, F) int64 of dataset rows."""
        idx = np.asarray(indices, dtype=np.int64)
        return np.stack(np.unravel_index(idx, self.factors_num_values), axis=1).astype(np.int64)

    def images_at(self, indices: np.ndarray) -> np.ndarray:
        """uint8 images (N, 1, F, 1)."""
        values = self.factors_of(indices) / self._scale
        return np.round(values * 255).astype(np.uint8).reshape(-1, *self.observation_shape)

    def observations_at(self, indices: np.ndarray) -> np.ndarray:
        """float32 observations (N, 1, F, 1) in [0, 1]."""
        return self.images_at(indices).astype(np.float32) / np.float32(255.0)

    def sample_observations_from_factors(
        self, factors: np.ndarray, random_state: np.random.RandomState
    ) -> np.ndarray:
        """Observations of the given factors (draws nothing from ``random_state``)."""
        return self.observations_at(self.index_of(factors))


def _factor_values(observations: np.ndarray, num_factors: int) -> np.ndarray:
    """Observations (N, 1, F, 1) -> factor values in [0, 1], (N, F) float64."""
    obs = np.asarray(observations)
    if obs.dtype == np.uint8:  # the same float32 conversion as the data set's observations
        obs = obs.astype(np.float32) / np.float32(255.0)
    return obs.reshape(obs.shape[0], num_factors).astype(np.float64)


def factor_representation(
    data: SyntheticData,
    *,
    order: Sequence[int] | None = None,
    signs: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    noise_dims: int = 0,
) -> Represent:
    """A perfectly disentangled code: latent i = sign_i * scale_i * (factor order_i - 0.5).

    ``noise_dims`` extra latents hold deterministic pseudo-noise (a hash of the observation),
    so the code stays a function of the observation.
    """
    f = data.num_factors
    perm = np.arange(f) if order is None else np.asarray(order)
    sign = np.ones(f) if signs is None else np.asarray(signs, dtype=np.float64)
    scale = np.ones(f) if scales is None else np.asarray(scales, dtype=np.float64)

    def represent(observations: np.ndarray) -> np.ndarray:
        v = _factor_values(observations, f)
        codes = (v[:, perm] - 0.5) * sign * scale
        if noise_dims:
            seed = (v * 1000).astype(np.int64) @ (np.arange(f) * 7919 + 1)
            noise = np.sin(seed[:, None] * (np.arange(noise_dims)[None, :] + 1.618) * 12.9898)
            codes = np.concatenate([codes, noise * 0.5], axis=1)
        return codes.astype(np.float32)

    return represent


def rotated_representation(data: SyntheticData, *, seed: int = 0) -> Represent:
    """The disentangled code multiplied by a random orthogonal matrix (entangled)."""
    f = data.num_factors
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(f, f))
    # Standardise first so that every factor has the same weight in every latent.
    sizes = np.asarray(data.factors_num_values, dtype=np.float64)
    std = np.sqrt((sizes**2 - 1) / 12.0) / np.maximum(sizes - 1, 1)

    def represent(observations: np.ndarray) -> np.ndarray:
        v = (_factor_values(observations, f) - 0.5) / np.where(std > 0, std, 1.0)
        return (v @ q).astype(np.float32)

    return represent


def noise_representation(num_codes: int, *, seed: int = 0) -> Represent:
    """Codes that ignore the observation: standard normal noise from a seeded generator."""
    rng = np.random.RandomState(seed)

    def represent(observations: np.ndarray) -> np.ndarray:
        return rng.randn(len(observations), num_codes).astype(np.float32)

    return represent


def gaussian_encoder(
    data: SyntheticData, *, logvar: float = -4.0
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """An ``encode`` for the cache: images (uint8 or float) -> (mu, logvar), mu disentangled."""
    rep = factor_representation(data)

    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = rep(images)
        return mu, np.full_like(mu, logvar)

    return encode
