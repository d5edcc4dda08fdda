"""The small immutable pieces of a search space: frozen values, value equality, paths, limits.

Everything here is plain and picklable with the standard `pickle`, so a space travels inside Ray's
searcher checkpoints (`_param.py`, `_space.py` build on it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from models.errors import ConfigError

DEFAULT_CORNER_LIMIT = 4096
DEFAULT_GRID_LIMIT = 100_000


class FrozenMap(Mapping[str, Any]):
    """A read-only, ordered, picklable mapping (the `fixed` values and a parameter's `when`)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items: dict[str, Any] = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (tuple(self._items.items()),))


def freeze(value: Any) -> Any:
    """Lists become tuples (recursively), so that fixed values cannot be changed in place."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Tuples become lists again, for YAML, JSON and Ray configs."""
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality of config values: True stays apart from 1 (Python's `True == 1` would merge
    them), and a float equals its round trip through JSON or Optuna's storage (12 digits)."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


_SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


def sci_float(value: Any) -> Any:
    """`"1e-4"` -> 1e-4: PyYAML (YAML 1.1) reads `1e-4` without a dot as a string, so a space
    read by plain `yaml.safe_load` (an inline space in a sweep file) gets its numbers back."""
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return value


def unique(values: Iterable[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if not any(same_value(v, u) for u in out):
            out.append(v)
    return tuple(out)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def label(name: str) -> str:
    """How errors name a space: `search space 'paper'`."""
    return f"search space {name!r}" if name else "search space"


def norm_path(path: Any, where: str) -> str:
    """`"model.beta"` and `" model/beta "` become `"model/beta"`; empty parts are rejected."""
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{where}: a config path must be a non-empty string, got {path!r}")
    parts = path.strip().replace(".", "/").split("/")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"{where}: {path!r} is not a config path such as 'model/beta'")
    return "/".join(p.strip() for p in parts)

