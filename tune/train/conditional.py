"""What the trainer does for a conditional model (cvae, ifcvae): resolve `model.condition_on` to
factor columns and class counts of the dataset, and give the metrics a view of the data in which
only the other factors exist, while the encoder is given each observation's true classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.metrics._utils import DerivedSampling
from models import ModelConfig
from models.errors import ConfigError
from tune.config.run import check_condition_on

__all__ = ["condition_columns", "with_condition_classes", "FreeFactors", "labels_at"]


def condition_columns(mcfg: ModelConfig, data: Any) -> list[int] | None:
    """The dataset's factor columns of `model.condition_on` (None for an unconditional model).

    Raises:
        ConfigError: a name that is not a factor of the dataset, or every factor conditioned
            (nothing left for the metrics to score).
    """
    if not mcfg.condition_on:
        return None
    names = list(data.factor_names)
    check_condition_on(mcfg.condition_on, names, data.name)
    if len(mcfg.condition_on) == len(names):
        raise ConfigError(
            f"model.condition_on lists every factor of {data.name!r} ({', '.join(names)}); "
            "leave at least one free for z to encode and the metrics to score"
        )
    return [names.index(n) for n in mcfg.condition_on]


def with_condition_classes(mcfg: ModelConfig, data: Any) -> ModelConfig:
    """`mcfg` with `condition_classes` set from the dataset (unchanged if unconditional)."""
    cols = condition_columns(mcfg, data)
    if cols is None:
        return mcfg
    sizes = tuple(int(data.factors_num_values[c]) for c in cols)
    if mcfg.condition_classes and tuple(mcfg.condition_classes) != sizes:
        raise ConfigError(
            f"model.condition_classes={list(mcfg.condition_classes)} but dataset {data.name!r} "
            f"has {list(sizes)} classes of {list(mcfg.condition_on)}; leave it out"
        )
    return mcfg.replace(condition_classes=sizes)


class FreeFactors(DerivedSampling):
    """The ground-truth interface over the factors a conditional model is NOT given.

    Its observations are dataset row indices (N, 1) int64: the conditioned factors' classes are
    drawn from the metric's random state (as hidden factors are), and the metric's `represent`
    (`represent(rows)`) encodes the rows' images with their true classes.
    """

    def __init__(self, data: Any, columns: list[int]) -> None:
        self._data = data
        self.columns = list(columns)
        self.free = [c for c in range(data.num_factors) if c not in self.columns]
        sizes = data.factors_num_values
        self.factors_num_values = [sizes[c] for c in self.free]
        self.factor_names = [data.factor_names[c] for c in self.free]
        self.observation_shape = (1,)

    @property
    def num_factors(self) -> int:
        return len(self.free)

    def __len__(self) -> int:
        return len(self._data)

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        full = self._data.sample_factors(num, random_state)
        return full[:, self.free]

    def sample_observations_from_factors(self, factors: np.ndarray,
                                         random_state: np.random.RandomState) -> np.ndarray:
        factors = np.asarray(factors)
        full = np.zeros((factors.shape[0], self._data.num_factors), np.int64)
        full[:, self.free] = factors
        sizes = self._data.factors_num_values
        for c in self.columns:
            full[:, c] = random_state.randint(sizes[c], size=factors.shape[0])
        return np.asarray(self._data.index_of(full), np.int64).reshape(-1, 1)


def labels_at(data: Any, columns: list[int], rows: np.ndarray) -> np.ndarray:
    """int64 (N, len(columns)) classes of the conditioned factors of dataset rows (N,)."""
    return np.asarray(data.factors_of(np.asarray(rows).reshape(-1)), np.int64)[:, columns]
