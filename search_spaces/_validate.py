"""Validation of a SearchSpace against the models, the run config's paths, and a caller's config
check run at every corner of the space (`_structure.py` checks a space on its own).

What it knows of the models is torch-free: the field names and types of `models.ModelConfig`, the
model names (`models._facts.MODEL_FACTS`), and `models.used_fields`.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from models import ModelConfig, used_fields
from models._facts import MODEL_FACTS
from models.errors import ConfigError
from models.strict import nearest
from search_spaces._values import label

if TYPE_CHECKING:
    from search_spaces._param import Param
    from search_spaces._space import SearchSpace

log = logging.getLogger(__name__)

Check = Callable[[dict[str, Any]], Any]


def validate(
    space: SearchSpace,
    *,
    known_paths: Iterable[str] | None = None,
    check: Check | None = None,
    model_names: Iterable[str] | None = None,
) -> None:
    """Check `space` against the models, the config paths and `check` (see `load_space`)."""
    _check_models(space, list(model_names) if model_names is not None else None)
    if known_paths is not None:
        _check_known(space, list(known_paths))
    if check is not None:
        _check_configs(space, check)


# ---- validation against models.ModelConfig ---------------------------------------------------
def _config_fields() -> tuple[dict[str, Any], dict[str, Any]]:
    """`ModelConfig`'s init fields by name, and its resolved type hints."""
    fields = {f.name: f for f in dataclasses.fields(ModelConfig) if f.init}
    return fields, typing.get_type_hints(ModelConfig)


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
    fields, hints = _config_fields()
    registry = tuple(MODEL_FACTS)  # the model names, torch-free (models.MODELS holds the same)
    known = [f"model/{f}" for f in fields]
    groups = space.groups()  # a path's Params: one, or its alternatives
    stacked = space.fixed.get("model/loss_terms") or ()  # their knobs are read too
    stacked = (stacked,) if isinstance(stacked, str) else tuple(stacked)

    # Which models can a trial of this space build?
    names: tuple[str, ...] | None
    if "model/name" in groups:
        name_param = groups["model/name"][0]  # alternatives share their choices
        if name_param.kind != "categorical":
            raise ConfigError(f"{where}: model/name must be given as `choices: [...]`")
        names = tuple(name_param.choices)
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
        alts = groups.get(path, ())
        if any(p.kind == "float" for p in alts) and _is_int_type(hints.get(field_name)):
            raise ConfigError(
                f"{where}: {path} takes whole numbers; declare the range with `type: int`"
            )
        if names is None or field_name == "name":
            continue
        for p in alts or (None,):  # each alternative applies to the models its `when` names
            _check_readers(where, path, p, names, stacked)


def _check_readers(
    where: str,
    path: str,
    p: Param | None,
    names: tuple[str, ...],
    stacked: tuple[str, ...],
) -> None:
    """`path` (searched by `p`, or fixed when None) must be read by the models it applies to."""
    field_name = path[len("model/") :]
    applies = names
    if p is not None and "model/name" in p.when:
        applies = tuple(n for n in names if n in p.when["model/name"])
    readers = [n for n in applies if field_name in used_fields(n, stacked)]
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
            raise ConfigError(
                f"{where}: unknown config path {path!r}; {nearest(path, known_paths)}"
            )


# ---- validation by building configurations ---------------------------------------------------
def _short(config: Mapping[str, Any], space: SearchSpace) -> str:
    shown = [f"{k}={v!r}" for k, v in config.items() if k not in space.fixed]
    return "{" + ", ".join(shown) + "}"


def _run_check(check: Check, config: dict[str, Any], space: SearchSpace, what: str) -> None:
    try:
        check(dict(config))
    except (ConfigError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{label(space.name)}: {what} {_short(config, space)} fails: {exc}"
        ) from (exc)


def _check_configs(space: SearchSpace, check: Check) -> None:
    corners = space.corners()
    for config in corners:
        _run_check(check, config, space, "the configuration")
    log.debug("%s: %d corners pass the config check", label(space.name), len(corners))
    for p in space.params:
        if p.kind != "float" or p.step is not None:
            continue
        base = next((c for c in corners if p.path in c and p.is_active(c, space.fixed)), None)
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
