"""`load_space`: presets, YAML files and Python modules, validated against the config and models."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import logging
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution

from models.errors import ConfigError
from models.strict import nearest
from search_spaces import _yaml
from search_spaces._space import Param, SearchSpace, from_distributions, label

log = logging.getLogger(__name__)

Check = Callable[[dict[str, Any]], Any]
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
    data = _yaml.loads(text, f"preset {name!r}")
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
        return SearchSpace.from_dict(_yaml.read(path) or {}, name=path.stem)
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
            that `check` rejects.
    """
    space = read_space(source)
    _check_models(space, list(model_names) if model_names is not None else None)
    if known_paths is not None:
        _check_known(space, list(known_paths))
    if check is not None:
        _check_configs(space, check)
    return space


# ---- validation against models.ModelConfig ---------------------------------------------------
def _model_api() -> tuple[dict[str, Any], dict[str, Any], Mapping[str, Any], Callable[..., Any]]:
    import models

    cfg = models.ModelConfig
    fields = {f.name: f for f in dataclasses.fields(cfg) if f.init}
    hints = typing.get_type_hints(cfg)
    return fields, hints, models.MODELS, models.used_fields


def _is_int_type(tp: Any) -> bool:
    if tp is int:
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return len(args) == 1 and args[0] is int
    return False


def _check_models(space: SearchSpace, model_names: list[str] | None) -> None:
    where = label(space.name)
    model_paths = [p for p in space.paths if p.startswith("model/")]
    if not model_paths and model_names is None:
        return
    fields, hints, registry, used_fields = _model_api()
    known = [f"model/{f}" for f in fields]
    params = {p.path: p for p in space.params}

    # Which models can a trial of this space build?
    names: tuple[str, ...] | None
    if "model/name" in params:
        p = params["model/name"]
        if p.kind != "categorical":
            raise ConfigError(f"{where}: model/name must be given as `choices: [...]`")
        names = tuple(p.choices)
    elif "model/name" in space.fixed:
        names = (space.fixed["model/name"],)
    elif model_names is not None:
        names = tuple(model_names)
    else:
        names = None
    for name in names or ():
        if name not in registry:
            raise ConfigError(
                f"{where}: model/name {name!r} is not a model; {nearest(str(name), registry)}"
            )

    for path in model_paths:
        field_name = path[len("model/") :]
        if field_name not in fields:
            raise ConfigError(f"{where}: unknown config path {path!r}; {nearest(path, known)}")
        p = params.get(path)
        if p is not None and p.kind == "float" and _is_int_type(hints.get(field_name)):
            raise ConfigError(
                f"{where}: {path} takes whole numbers; declare the range with `type: int`"
            )
        if names is None or field_name == "name":
            continue
        applies = names
        if p is not None and "model/name" in p.when:
            applies = tuple(n for n in names if n in p.when["model/name"])
        readers = [n for n in applies if field_name in used_fields(n)]
        ignoring = [n for n in applies if n not in readers]
        if not readers:
            who = applies[0] if len(applies) == 1 else "the models " + ", ".join(applies)
            raise ConfigError(
                f"{where}: {path}: {who} {'ignores' if len(applies) == 1 else 'ignore'} it; "
                "drop it, or search it only for a model that reads it"
            )
        if p is not None and ignoring:
            raise ConfigError(
                f"{where}: {path}: {', '.join(ignoring)} "
                f"{'ignores' if len(ignoring) == 1 else 'ignore'} it; add "
                f"`when: {{model/name: [{', '.join(readers)}]}}`"
            )


def _check_known(space: SearchSpace, known_paths: list[str]) -> None:
    where = label(space.name)
    for path in space.paths:
        if path.startswith("model/"):
            continue  # checked against ModelConfig
        if path not in known_paths:
            raise ConfigError(f"{where}: unknown config path {path!r}; {nearest(path, known_paths)}")


# ---- validation by building configurations ---------------------------------------------------
def _short(config: Mapping[str, Any], space: SearchSpace) -> str:
    shown = [f"{k}={v!r}" for k, v in config.items() if k not in space.fixed]
    return "{" + ", ".join(shown) + "}"


def _run_check(check: Check, config: dict[str, Any], space: SearchSpace, what: str) -> None:
    try:
        check(dict(config))
    except (ConfigError, ValueError, TypeError) as exc:
        raise ConfigError(f"{label(space.name)}: {what} {_short(config, space)} fails: {exc}") from (
            exc
        )


def _check_configs(space: SearchSpace, check: Check) -> None:
    corners = space.corners()
    for config in corners:
        _run_check(check, config, space, "the configuration")
    log.debug("%s: %d corners pass the config check", label(space.name), len(corners))
    for p in space.params:
        if p.kind != "float" or p.step is not None:
            continue
        base = next((c for c in corners if p.path in c), None)
        if base is None:
            continue
        probe = dict(base)
        probe[p.path] = p.interior_value()
        try:
            check(dict(probe))
        except (ConfigError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"{label(space.name)}: {p.path}={probe[p.path]:g} (inside the range) fails: "
                f"{exc}; if it takes whole numbers, declare the range with `type: int`"
            ) from exc


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

