"""`load_space`: presets, YAML files and Python modules, validated against the config and
models."""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution

from models import strict_yaml
from models.errors import ConfigError
from models.strict import nearest
from search_spaces._space import SearchSpace, from_distributions, label
from search_spaces._validate import Check, validate

log = logging.getLogger(__name__)

_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_PRESET_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


# ---- presets ---------------------------------------------------------------------------------
def preset_names() -> list[str]:
    """The names of the built-in spaces (`search_spaces/presets/*.yaml`), sorted."""
    folder = importlib.resources.files("search_spaces") / "presets"
    return sorted(
        entry.name[: -len(".yaml")]
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.startswith(("_", "."))
    )


def _read_preset(name: str) -> SearchSpace:
    text = (importlib.resources.files("search_spaces") / "presets" / f"{name}.yaml").read_text(
        encoding="utf-8"
    )
    data = strict_yaml.loads(text, f"preset {name!r}")
    return SearchSpace.from_dict(data, name=name)


# ---- reading any source ----------------------------------------------------------------------
def _from_object(obj: Any, name: str) -> SearchSpace:
    if isinstance(obj, SearchSpace):
        return obj
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, BaseDistribution) for v in obj.values()):
            return from_distributions(obj, name=name)
        return SearchSpace.from_dict(obj, name=name)
    raise ConfigError(
        f"{label(name)}: expected a SearchSpace, a mapping in the YAML form ({{params: ..., "
        f"fixed: ...}}) or a dict of Optuna distributions; got {type(obj).__name__}"
    )


def _from_module(spec: str) -> SearchSpace:
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"search space {spec!r}: cannot import {module_name!r}: {exc}") from None
    if not hasattr(module, attr):
        names = [n for n in vars(module) if not n.startswith("_")]
        raise ConfigError(
            f"search space {spec!r}: module {module_name!r} has no {attr!r}; "
            f"{nearest(attr, names)}"
        )
    obj = getattr(module, attr)
    if callable(obj) and not isinstance(obj, (SearchSpace, Mapping)):
        raise ConfigError(
            f"search space {spec!r}: {attr} is a function; give the space as data (a "
            "SearchSpace, a YAML-form dict or a dict of Optuna distributions) so that it can be "
            "checked before the sweep and saved with it"
        )
    return _from_object(obj, spec)


def read_space(source: str | Path | Mapping[str, Any] | SearchSpace) -> SearchSpace:
    """Read a space without checking it against the config (see `load_space`)."""
    if isinstance(source, (SearchSpace, Mapping)):
        return _from_object(source, getattr(source, "name", "") or "")
    if not isinstance(source, (str, Path)):
        raise ConfigError(
            f"search space: expected a preset name, a YAML path or module:ATTR, got {source!r}"
        )
    text = str(source).strip()
    path = Path(text).expanduser()
    if isinstance(source, Path) or text.endswith((".yaml", ".yml")) or path.is_file():
        data = strict_yaml.read(path, "search-space file")
        return SearchSpace.from_dict(data or {}, name=path.stem)
    if _MODULE_SPEC.match(text):
        return _from_module(text)
    presets = preset_names()
    if text in presets:
        return _read_preset(text)
    if _PRESET_NAME.match(text):
        raise ConfigError(
            f"unknown search space {text!r}; {nearest(text, presets)} "
            "(or give a YAML file, or a Python module:ATTR)"
        )
    raise ConfigError(
        f"search space {text!r}: no such file; give a preset ({', '.join(presets)}), a YAML "
        "file or a Python module:ATTR"
    )


def load_space(
    source: str | Path | Mapping[str, Any] | SearchSpace,
    *,
    known_paths: Iterable[str] | None = None,
    check: Check | None = None,
    model_names: Iterable[str] | None = None,
) -> SearchSpace:
    """Load a search space and validate it before anything runs.

    Args:
        source: a preset name (`preset_names()`: `paper`, `quick`, ...), a path to a YAML file,
            a Python `package.module:ATTR` naming a SearchSpace, a YAML-form dict or a dict of
            Optuna distributions, or a SearchSpace (e.g. one read back from `sweep.yaml`).
        known_paths: every settable path of the run config (`tune.config.known_paths()`); paths
            outside `model/` are checked against it (`model/` paths are always checked against
            `models.ModelConfig`). None skips that check for the other sections.
        check: called with a flat `{path: value}` dict (a configuration of the space) and
            expected to raise ConfigError if it is not a valid run config. It is called at every
            corner (`SearchSpace.corners()`: each range's low and high, each choice, for every
            model) and at one non-integral value inside each float range.
        model_names: the models the space will be used with, when the space itself does not set
            `model/name` (for the check that each `model/` parameter is read by them).

    Returns:
        The SearchSpace.

    Raises:
        ConfigError: one line naming the space, the parameter and what would be right: an
            unknown path (with the nearest valid one), an empty range, a log range touching zero,
            a step that does not fit, empty or duplicated choices, a condition naming an unknown
            parameter or value, a parameter that the model(s) it applies to ignore, a corner
            that `check` rejects; for a path declared as a list of alternatives, an alternative
            without `when`, two that can apply in one trial, alternatives differing in kind,
            `log` or choices, or a list of fewer than two.
    """
    space = read_space(source)
    validate(space, known_paths=known_paths, check=check, model_names=model_names)
    return space


# ---- Optuna's define-by-run ------------------------------------------------------------------
class DefineByRun:
    """A picklable define-by-run function for `OptunaSearch(space=...)`.

    Ray checkpoints its searcher with the standard `pickle`, so the space function must not be a
    lambda or a closure; an instance of this module-level class holding only the SearchSpace
    pickles. Calling it suggests the parameters on the trial and returns every value (suggested
    and fixed) as "/"-paths, which Ray merges and unflattens into the trial's nested config.
    """

    def __init__(self, space: SearchSpace) -> None:
        if not isinstance(space, SearchSpace):
            raise TypeError(f"DefineByRun needs a SearchSpace, got {type(space).__name__}")
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        return self.space.suggest(trial)

    def __repr__(self) -> str:
        return f"DefineByRun({label(self.space.name)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DefineByRun) and other.space == self.space

    def __hash__(self) -> int:
        return hash(self.space)


def define_by_run(space: SearchSpace) -> DefineByRun:
    """The `space` argument for Ray's `OptunaSearch`: `OptunaSearch(define_by_run(space), ...)`."""
    return DefineByRun(space)
