"""`SearchSpace`: Optuna search spaces as data, with conditions, corners and a grid.

A space is an ordered tuple of `Param`s (a float range, an int range or a categorical choice, each
named by a `"model/beta"`-style path into the run config and optionally active only `when` earlier
parameters take given values) plus `fixed` constants merged into every trial's config. Everything
here is plain, frozen and picklable with the standard `pickle`, so a space travels inside Ray's
searcher checkpoints and into `sweep.yaml` (`to_dict`/`from_dict`).

One path may be declared as a list of alternatives, each with its own `when` and range (beta
1-16 for beta-VAE, 1-10 for beta-TCVAE): they are consecutive Params with the same path, at most
one of them active in any trial, all of one kind, `log` and choices (Optuna keeps one
distribution per parameter name in a study), so the Optuna name stays the path.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from models.errors import ConfigError
from models.strict import nearest

log = logging.getLogger(__name__)

Kind = Literal["float", "int", "categorical"]
PARAM_KEYS = ("choices", "low", "high", "log", "step", "type", "when")
SPACE_KEYS = ("name", "description", "params", "fixed")
DEFAULT_CORNER_LIMIT = 4096
DEFAULT_GRID_LIMIT = 100_000


# ---- small immutable helpers -----------------------------------------------------------------
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


def _freeze(value: Any) -> Any:
    """Lists become tuples (recursively), so that fixed values cannot be changed in place."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Tuples become lists again, for YAML, JSON and Ray configs."""
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
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


def _sci_float(value: Any) -> Any:
    """`"1e-4"` -> 1e-4: PyYAML (YAML 1.1) reads `1e-4` without a dot as a string, so a space
    read by plain `yaml.safe_load` (an inline space in a sweep file) gets its numbers back."""
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return value


def _unique(values: Iterable[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if not any(same_value(v, u) for u in out):
            out.append(v)
    return tuple(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
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


# ---- one parameter ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched setting.

    Attributes:
        path: the "/"-path into the run config, also the Optuna parameter name (`"model/beta"`).
            Alternatives of one path are several Params with that path (see `SearchSpace`).
        kind: "float", "int" or "categorical".
        low, high: the range, both ends inclusive (Optuna's convention, unlike Tune's `randint`).
        log: sample on a log scale (`low > 0`).
        step: a grid step for a range (`high - low` must be a multiple of it); int ranges use 1.
        choices: the values of a categorical parameter (None, bool, int, float or str).
        when: conditions: `{parent path: allowed values}`; the parameter exists in a trial only
            when every parent was set to one of its allowed values.
    """

    path: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    when: FrozenMap = field(default_factory=FrozenMap)

    # -- Optuna --------------------------------------------------------------------------------
    def distribution(self) -> BaseDistribution:
        """The Optuna distribution (what `distribution_to_json` writes)."""
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(
                int(self.low or 0), int(self.high or 0), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(
            float(self.low or 0), float(self.high or 0), log=self.log, step=self.step
        )

    def suggest(self, trial: Any) -> Any:
        """Ask `trial` (an `optuna.Trial`, or Ray's wrapper around one) for this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.path, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                self.path,
                int(self.low or 0),
                int(self.high or 0),
                step=int(self.step or 1),
                log=self.log,
            )
        return trial.suggest_float(
            self.path, float(self.low or 0), float(self.high or 0), step=self.step, log=self.log
        )

    # -- conditions ----------------------------------------------------------------------------
    def is_active(self, values: Mapping[str, Any], fixed: Mapping[str, Any]) -> bool:
        """Whether the parameter exists given the values set so far (and the fixed ones)."""
        for parent, allowed in self.when.items():
            if parent in values:
                value = values[parent]
            elif parent in fixed:
                value = fixed[parent]
            else:  # the parent is itself inactive
                return False
            if not any(same_value(value, a) for a in allowed):
                return False
        return True

    def can_take(self, value: Any) -> bool:
        """Whether a suggestion can equal `value` (used to check conditions)."""
        if self.kind == "categorical":
            return any(same_value(value, c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = float(self.low or 0), float(self.high or 0)
        if not low <= value <= high:
            return False
        if self.kind == "int":
            return float(value).is_integer() and (int(value) - int(low)) % int(self.step or 1) == 0
        if self.step is None:
            return True
        n = (value - low) / self.step
        return abs(n - round(n)) < 1e-9 * max(1.0, abs(n))

    # -- values --------------------------------------------------------------------------------
    def size(self) -> int | None:
        """How many values the parameter can take; None for a continuous range."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.step is None and self.kind == "float":
            return None
        step = self.step or 1
        return round((float(self.high or 0) - float(self.low or 0)) / step) + 1

    def all_values(self) -> tuple[Any, ...]:
        """Every value, for a grid. Raises ConfigError for a continuous float range."""
        if self.kind == "categorical":
            return self.choices
        n = self.size()
        if n is None:
            raise ConfigError(
                f"{self.path}: a continuous float range has no grid; give it `step:` or "
                "`choices:` to enumerate it"
            )
        if self.kind == "int":
            return tuple(range(int(self.low or 0), int(self.high or 0) + 1, int(self.step or 1)))
        low, step = float(self.low or 0), float(self.step or 0)
        return tuple(low + i * step for i in range(n))

    def corner_values(self) -> tuple[Any, ...]:
        """The extremes: each choice, or a range's low and high."""
        if self.kind == "categorical":
            return self.choices
        return _unique((self.low, self.high))

    def interior_value(self) -> float:
        """A value strictly inside a float range and (almost surely) not a whole number.

        Checking it catches a float range over a setting that takes only integers.
        """
        low, high = float(self.low or 0), float(self.high or 0)
        for frac in (0.381966, 0.618034, 0.2360679, 0.7639320):
            if self.log:
                value = math.exp(math.log(low) + frac * (math.log(high) - math.log(low)))
            else:
                value = low + frac * (high - low)
            if not float(value).is_integer():
                return value
        return value

    # -- text ----------------------------------------------------------------------------------
    def domain(self) -> str:
        """`{a, b}`, `float [1, 16] log` or `int [1, 5] step 2`."""
        if self.kind == "categorical":
            return "{" + ", ".join(_fmt(c) for c in self.choices) + "}"
        text = f"{self.kind} [{_fmt(self.low)}, {_fmt(self.high)}]"
        if self.log:
            text += " log"
        if self.step is not None and not (self.kind == "int" and self.step == 1):
            text += f" step {_fmt(self.step)}"
        return text

    def condition(self) -> str:
        parts = []
        for parent, allowed in self.when.items():
            if len(allowed) == 1:
                parts.append(f"{parent} = {_fmt(allowed[0])}")
            else:
                parts.append(f"{parent} in {{{', '.join(_fmt(a) for a in allowed)}}}")
        return " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (see `parse_param`)."""
        out: dict[str, Any]
        if self.kind == "categorical":
            out = {"choices": list(self.choices)}
        else:
            out = {"low": self.low, "high": self.high}
            if self.kind == "int":
                out["type"] = "int"
            if self.log:
                out["log"] = True
            if self.step is not None and not (self.kind == "int" and self.step == 1):
                out["step"] = self.step
        if self.when:
            out["when"] = {
                p: (_thaw(a[0]) if len(a) == 1 else [_thaw(v) for v in a])
                for p, a in self.when.items()
            }
        return out


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number: float | int
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{what} must be a number, got {value!r}") from None
    else:
        number = value
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return number


def _integer(value: Any, what: str) -> int:
    number = _number(value, what)
    if isinstance(number, float):
        if not number.is_integer():
            raise ConfigError(f"{what} must be a whole number for `type: int`, got {value!r}")
        number = int(number)
    return number


def parse_when(spec: Any, where: str) -> FrozenMap:
    """`{model/name: mipet_vae}` or `{model/name: [a, b]}` -> FrozenMap of value tuples."""
    if spec is None:
        return FrozenMap()
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"{where}: `when` must map earlier parameters to their values, such as "
            f"{{model/name: mipet_commutative}}; got {spec!r}"
        )
    out: dict[str, tuple[Any, ...]] = {}
    for key, allowed in spec.items():
        parent = norm_path(key, f"{where}: when")
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values:
            raise ConfigError(f"{where}: when {parent}: the list of values is empty")
        if parent in out:
            raise ConfigError(f"{where}: when names {parent!r} twice")
        out[parent] = _freeze(_unique(values))
    return FrozenMap(out)


def parse_declaration(path: str, spec: Any, where: str) -> list[Param]:
    """The Params of one `params:` entry: one spec (see `parse_param`), or a list of alternatives.

    A list of mappings declares alternatives, `[{low: 1.0, high: 16.0, when: {...}}, {...}]`;
    any other list is the choices shorthand. `SearchSpace` checks that the alternatives exclude
    each other and agree on kind, `log` and choices.

    Raises:
        ConfigError: an empty list, a list of one mapping, a list mixing mappings and values,
            or a bad spec (see `parse_param`).
    """
    here = f"{where}: {path}"
    if not isinstance(spec, (list, tuple)) or (
        spec and not any(isinstance(s, Mapping) for s in spec)
    ):
        return [parse_param(path, spec, where)]
    if not spec:
        raise ConfigError(
            f"{here}: an empty list declares nothing; declare it as one mapping, such as "
            "{low: 1.0, high: 16.0} or {choices: [a, b]}"
        )
    if len(spec) == 1:
        raise ConfigError(
            f"{here}: a list with a single alternative; declare it as one mapping (a list is "
            "for two or more alternatives, each with its own `when`)"
        )
    for i, s in enumerate(spec, 1):
        if not isinstance(s, Mapping):
            raise ConfigError(
                f"{here}: alternative {i} is {s!r}, not a mapping; a list of alternatives holds "
                "only mappings such as {low: 1.0, high: 10.0, when: {model/name: betatcvae}} "
                "(choices go under `choices: [...]`)"
            )
    return [parse_param(path, s, where, alternative=i) for i, s in enumerate(spec, 1)]


def parse_param(path: str, spec: Any, where: str, *, alternative: int | None = None) -> Param:
    """Build a Param from its YAML form.

    Forms: `{choices: [a, b]}` (or just `[a, b]`); `{low: 1.0, high: 16.0, log: true}` (a float
    range); `{low: 1, high: 5, type: int, step: 1}`; each may carry `when: {path: value(s)}`.
    `alternative` (1, 2, ...) numbers one alternative of a path in the error messages.

    Raises:
        ConfigError: unknown keys, an empty range, a log range touching zero, a step that does
            not fit the range, empty or duplicated choices, choices Optuna cannot hold.
    """
    here = f"{where}: {path}" + ("" if alternative is None else f" (alternative {alternative})")
    if isinstance(spec, (list, tuple)):
        spec = {"choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{here}: expected a range such as {{low: 1.0, high: 16.0, log: true}} or choices "
            f"such as {{choices: [0.0, 1.0e-4]}} (a constant goes under `fixed:`); got {spec!r}"
        )
    for key in spec:
        if key not in PARAM_KEYS:
            raise ConfigError(f"{here}: unknown key {key!r}; {nearest(str(key), PARAM_KEYS)}")
    when = parse_when(spec.get("when"), here)

    if "choices" in spec:
        extra = [k for k in ("low", "high", "log", "step", "type") if k in spec]
        if extra:
            raise ConfigError(f"{here}: `choices` cannot be combined with {', '.join(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{here}: `choices` must be a non-empty list, got {choices!r}")
        choices = [_sci_float(c) for c in choices]
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(
                    f"{here}: choice {c!r} is a {type(c).__name__}; Optuna choices must be "
                    "None, bool, int, float or str (put a list-valued setting under `fixed:`)"
                )
            if isinstance(c, float) and not math.isfinite(c):
                raise ConfigError(f"{here}: choice {c!r} is not finite")
        if len(_unique(choices)) != len(choices):
            dup = next(c for i, c in enumerate(choices)
                       if any(same_value(c, d) for d in choices[:i]))
            raise ConfigError(f"{here}: choice {dup!r} is listed twice")
        return Param(path, "categorical", choices=tuple(choices), when=when)

    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ConfigError(
            f"{here}: a range needs `low` and `high` (missing {', '.join(missing)}), or give "
            "`choices: [...]`"
        )
    kind = spec.get("type", "float")
    if kind not in ("float", "int"):
        raise ConfigError(f"{here}: `type` must be float or int, got {kind!r}")
    use_log = spec.get("log", False)
    if not isinstance(use_log, bool):
        raise ConfigError(f"{here}: `log` must be true or false, got {use_log!r}")
    step_given = spec.get("step")

    low: float | int
    high: float | int
    step: float | int | None
    if kind == "int":
        low, high = _integer(spec["low"], f"{here}: low"), _integer(spec["high"], f"{here}: high")
        step = 1 if step_given is None else _integer(step_given, f"{here}: step")
    else:
        low = float(_number(spec["low"], f"{here}: low"))
        high = float(_number(spec["high"], f"{here}: high"))
        step = None if step_given is None else float(_number(step_given, f"{here}: step"))
    if low >= high:
        raise ConfigError(
            f"{here}: empty range: low={_fmt(low)} must be below high={_fmt(high)} "
            "(a single value goes under `fixed:`)"
        )
    if use_log and low <= 0:
        raise ConfigError(
            f"{here}: a log range must stay above zero, got low={_fmt(low)}; use a small "
            "positive low (such as 1.0e-6) or drop `log: true`"
        )
    if step is not None and step <= 0:
        raise ConfigError(f"{here}: step must be > 0, got {_fmt(step)}")
    if use_log and step_given is not None and not (kind == "int" and step == 1):
        raise ConfigError(
            f"{here}: `step` cannot be combined with `log: true` (Optuna forbids it)"
        )
    if step is not None:
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
            top = low + math.floor(n + 1e-9) * step
            raise ConfigError(
                f"{here}: step {_fmt(step)} does not fit the range [{_fmt(low)}, {_fmt(high)}]: "
                f"high - low must be a multiple of it; use high: {_fmt(top)}"
            )
    return Param(path, kind, low=low, high=high, log=use_log, step=step, when=when)


# ---- the space -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """An Optuna search space over "/"-paths of the run config, as data.

    Build one with `load_space` (presets, YAML files, Python modules; validated against the
    config) or `SearchSpace.from_dict`. Parameters are suggested in declaration order, so a
    `when` condition may only name parameters declared before it (or fixed paths).

    Example:
        >>> import optuna
        >>> space = SearchSpace.from_dict({
        ...     "params": {
        ...         "model/name": {"choices": ["mipet_vae", "mipet_commutative"]},
        ...         "model/hy_rec": {"low": 0.01, "high": 1.0, "log": True,
        ...                          "when": {"model/name": "mipet_commutative"}},
        ...     },
        ...     "fixed": {"train/lr": 4.0e-4},
        ... })
        >>> config = space.suggest(optuna.create_study().ask())
        >>> config["train/lr"]
        0.0004
    """

    params: tuple[Param, ...]
    fixed: FrozenMap = field(default_factory=FrozenMap)
    name: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        fixed = self.fixed if isinstance(self.fixed, Mapping) else dict(self.fixed)
        object.__setattr__(self, "fixed", FrozenMap((k, _freeze(v)) for k, v in fixed.items()))
        try:
            self._check_structure()
        except ConfigError as exc:
            raise ConfigError(f"{label(self.name)}: {exc}") from None

    # -- reading and writing -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "") -> SearchSpace:
        """Build a space from its YAML form: `{params: {path: spec}, fixed: {path: value}}`.

        Checks the space on its own (ranges, choices, conditions, duplicates); `load_space`
        also checks it against the config and the models.
        """
        where = label(name)
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping with `params:` (and `fixed:`), got "
                f"{type(data).__name__}"
            )
        for key in data:
            if key not in SPACE_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}; {nearest(str(key), SPACE_KEYS)}")
        name = str(data.get("name") or name)
        where = label(name)
        description = data.get("description") or ""
        if not isinstance(description, str):
            raise ConfigError(f"{where}: `description` must be text, got {description!r}")
        raw_params = data.get("params") or {}
        if not isinstance(raw_params, Mapping):
            raise ConfigError(
                f"{where}: `params` must map config paths to ranges or choices, got "
                f"{type(raw_params).__name__}"
            )
        params: list[Param] = []
        seen: set[str] = set()
        for key, spec in raw_params.items():
            path = norm_path(key, f"{where}: params")
            if path in seen:
                raise ConfigError(
                    f"{where}: parameter {path!r} is declared twice; declare it once, as a "
                    "list of alternatives if its range depends on a condition"
                )
            seen.add(path)
            params += parse_declaration(path, spec, where)
        fixed = _flatten_fixed(data.get("fixed"), where)
        return cls(tuple(params), FrozenMap(fixed), name=name, description=description)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form; `SearchSpace.from_dict(space.to_dict()) == space`."""
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["params"] = {
            path: alts[0].to_dict() if len(alts) == 1 else [p.to_dict() for p in alts]
            for path, alts in self.groups().items()
        }
        out["fixed"] = {k: _thaw(v) for k, v in self.fixed.items()}
        return out

    def to_yaml(self) -> str:
        from models.strict_yaml import dumps

        return dumps(self.to_dict())

    # -- what it sets --------------------------------------------------------------------------
    @property
    def paths(self) -> tuple[str, ...]:
        """Every path a trial's config may receive: the parameters', then the fixed ones."""
        return tuple(self.groups()) + tuple(self.fixed)

    def groups(self) -> dict[str, tuple[Param, ...]]:
        """`{path: its Params}` in declaration order: one Param, or a path's alternatives."""
        out: dict[str, tuple[Param, ...]] = {}
        for p in self.params:
            out[p.path] = out.get(p.path, ()) + (p,)
        return out

    def alternatives(self, path: str) -> tuple[Param, ...]:
        """The Params declared for `path` (one, or its alternatives); () if none."""
        return self.groups().get(path, ())

    def active(self, path: str, values: Mapping[str, Any]) -> Param | None:
        """The Param of `path` that applies given the `values` of earlier parameters, or None."""
        return next(
            (p for p in self.params if p.path == path and p.is_active(values, self.fixed)), None
        )

    def fixed_dict(self) -> dict[str, Any]:
        """The fixed values as a fresh dict (lists, not tuples)."""
        return {k: _thaw(v) for k, v in self.fixed.items()}

    def distributions(self) -> dict[str, BaseDistribution]:
        """`{path: optuna distribution}` for every parameter, conditional ones included.

        A path declared as alternatives gets the union of their domains: the lowest low, the
        highest high, and a step on which every alternative's values lie (none for floats whose
        grids differ). It has the kind, `log` and choices of each alternative, so Optuna accepts
        it for the name alongside theirs, and it holds every value that name takes in any trial
        (for `create_trial(distributions=...)` or saving the space as JSON). A trial is asked
        with the active alternative's own `Param.distribution()`.
        """
        return {path: _union_distribution(alts) for path, alts in self.groups().items()}

    # -- define-by-run -------------------------------------------------------------------------
    def suggest(self, trial: Any) -> dict[str, Any]:
        """Suggest one configuration, define-by-run.

        Parameters are asked for in declaration order; one whose `when` is not met is not asked
        for at all, so it is absent from the trial (and from Optuna's `trial.params`).

        Args:
            trial: an `optuna.Trial` (or anything with its `suggest_*` methods).
        Returns:
            `{path: value}`: the suggested values, then the fixed ones.
        """
        values: dict[str, Any] = {}
        for p in self.params:
            if p.is_active(values, self.fixed):
                values[p.path] = p.suggest(trial)
        values.update(self.fixed_dict())
        return values

    # -- enumerations --------------------------------------------------------------------------
    def _parents(self) -> dict[str, tuple[Any, ...]]:
        """`{parent path: every value some condition names}` for parameters used in conditions."""
        out: dict[str, tuple[Any, ...]] = {}
        names = {p.path for p in self.params}
        for p in self.params:
            for parent, allowed in p.when.items():
                if parent in names:
                    out[parent] = _unique(out.get(parent, ()) + tuple(allowed))
        return out

    def _rows(
        self, values_for: Callable[[Param], Sequence[Any]], *, full: bool, limit: int
    ) -> list[dict[str, Any]] | None:
        """Parameter assignments respecting the conditions; None if more than `limit`.

        The parameters that conditions name ("structural") are crossed in full; the others are
        crossed in full too (`full=True`) or stepped together, so that each of their values
        appears at least once per structural assignment (`full=False`).
        """
        structural = self._parents()
        fixed = self.fixed
        rows: list[dict[str, Any]] = []

        def walk(i: int, cur: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if i == len(self.params):
                yield dict(cur)
                return
            p = self.params[i]
            if p.path not in structural or not p.is_active(cur, fixed):
                yield from walk(i + 1, cur)
                return
            for v in values_for(p):
                cur[p.path] = v
                yield from walk(i + 1, cur)
            del cur[p.path]

        for base in walk(0, {}):
            free = [
                p for p in self.params if p.path not in structural and p.is_active(base, fixed)
            ]
            lists = [values_for(p) for p in free]
            combos: Iterable[tuple[Any, ...]]
            if full:
                combos = itertools.product(*lists)
            else:
                n = max((len(v) for v in lists), default=1)
                combos = (tuple(v[i % len(v)] for v in lists) for i in range(n))
            for combo in combos:
                merged = dict(base)
                merged.update(zip((p.path for p in free), combo))
                rows.append({p.path: merged[p.path] for p in self.params if p.path in merged})
                if len(rows) > limit:
                    return None
        return rows

    def _corner_values(self) -> Callable[[Param], Sequence[Any]]:
        parents = self._parents()

        def values_for(p: Param) -> Sequence[Any]:  # a value conditions name, if p can take it
            named = tuple(v for v in parents.get(p.path, ()) if p.can_take(v))
            return _unique(p.corner_values() + named)

        return values_for

    def corners(self, *, limit: int = DEFAULT_CORNER_LIMIT) -> list[dict[str, Any]]:
        """Configurations at the extremes: each range's low and high, each choice.

        Every combination of corner values is returned (conditions respected) when there are at
        most `limit` of them; otherwise every value of every parameter still appears at least once
        for each combination of the parameters that conditions name (each model, typically).

        Returns:
            A list of `{path: value}` dicts, parameters then fixed values, like `suggest`.
        """
        values_for = self._corner_values()
        rows = self._rows(values_for, full=True, limit=limit)
        if rows is None:
            log.info(
                "%s: more than %d corners; covering each value instead", label(self.name), limit
            )
            rows = self._rows(values_for, full=False, limit=10 * limit) or []
        fixed = self.fixed_dict()
        return [{**row, **fixed} for row in rows]

    def grid(self, *, limit: int = DEFAULT_GRID_LIMIT) -> list[dict[str, Any]]:
        """Every configuration of a space without continuous ranges, in declaration order.

        Raises:
            ConfigError: a float range without `step`, or more than `limit` configurations.
        """
        for p in self.params:
            size = p.size()
            if size is None:
                raise ConfigError(f"{label(self.name)}: no grid: {p.path} is a continuous range")
            if size > limit:
                raise ConfigError(
                    f"{label(self.name)}: no grid: {p.path} alone has {size} values "
                    f"(limit {limit})"
                )
        rows = self._rows(lambda p: p.all_values(), full=True, limit=limit)
        if rows is None:
            raise ConfigError(f"{label(self.name)}: the grid has more than {limit} configurations")
        fixed = self.fixed_dict()
        return [{**row, **fixed} for row in rows]

    # -- text ----------------------------------------------------------------------------------
    def describe(self) -> str:
        """A short text table of the parameters, conditions and fixed values."""
        groups = self.groups()
        title = f"{label(self.name)}: {len(groups)} parameters, {len(self.fixed)} fixed"
        split = [f"{path} ({len(alts)} alternatives)" for path, alts in groups.items()
                 if len(alts) > 1]
        if split:
            title += "; " + ", ".join(split)
        if self.description:
            title += "\n" + textwrap.fill(
                " ".join(self.description.split()),
                width=99,
                initial_indent="  ",
                subsequent_indent="  ",
            )
        rows = [("parameter", "domain", "when")]
        rows += [(p.path, p.domain(), p.condition()) for p in self.params]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        lines = [title]
        for path, domain, cond in rows:
            lines.append(f"  {path:<{widths[0]}}  {domain:<{widths[1]}}  {cond}".rstrip())
        if self.fixed:
            width = max(len(k) for k in self.fixed)
            lines.append("  fixed:")
            lines += [f"    {k:<{width}} = {_fmt(v)}" for k, v in self.fixed.items()]
        return "\n".join(lines)

    # -- checks --------------------------------------------------------------------------------
    def validate(
        self,
        *,
        known_paths: Iterable[str] | None = None,
        check: Callable[[dict[str, Any]], Any] | None = None,
        model_names: Iterable[str] | None = None,
    ) -> None:
        """Check the space against the models, the run config's paths and `check`.

        The same checks as `load_space` (see there for the arguments).

        Raises:
            ConfigError: the first problem found, in one line.
        """
        from search_spaces._validate import validate

        validate(self, known_paths=known_paths, check=check, model_names=model_names)

    def _check_structure(self) -> None:
        declared: dict[str, list[Param]] = {}
        all_names = [p.path for p in self.params]
        last = None
        for p in self.params:
            if not isinstance(p, Param):
                raise ConfigError(f"parameters must be Param objects, got {p!r}")
            if p.path in declared and p.path != last:
                raise ConfigError(
                    f"parameter {p.path!r} is declared twice apart; declare alternatives of a "
                    "path one after another (one list in YAML)"
                )
            if p.path in self.fixed:
                raise ConfigError(
                    f"{p.path!r} is both a parameter and a fixed value; keep one of them"
                )
            for parent, allowed in p.when.items():
                if parent == p.path:
                    raise ConfigError(f"{p.path}: a parameter cannot be conditioned on itself")
                if parent in declared:
                    alts = declared[parent]
                    if any(q.kind == "float" and q.step is None for q in alts):
                        raise ConfigError(
                            f"{p.path}: when {parent}: a condition needs a categorical or int "
                            f"parameter, and {parent} is a continuous float range"
                        )
                    domain = " or ".join(q.domain() for q in alts)
                    for value in allowed:
                        if not any(q.can_take(value) for q in alts):
                            raise ConfigError(
                                f"{p.path}: when {parent} = {value!r}: {parent} never takes "
                                f"that value; its domain is {domain}"
                            )
                elif parent in self.fixed:
                    if not any(same_value(self.fixed[parent], a) for a in allowed):
                        raise ConfigError(
                            f"{p.path}: when {parent} in {_fmt(tuple(allowed))}: never true, "
                            f"{parent} is fixed to {_fmt(self.fixed[parent])}"
                        )
                elif parent in all_names:
                    raise ConfigError(
                        f"{p.path}: when {parent}: {parent} must be declared before {p.path} "
                        "(parameters are suggested in order)"
                    )
                else:
                    raise ConfigError(
                        f"{p.path}: when {parent!r}: no such parameter or fixed value; "
                        f"{nearest(parent, all_names + list(self.fixed))}"
                    )
            declared.setdefault(p.path, []).append(p)
            last = p.path
        for path, alts in declared.items():
            if len(alts) > 1:
                _check_alternatives(path, alts)
        if self.params:
            rows = self._rows(self._corner_values(), full=False, limit=100 * DEFAULT_CORNER_LIMIT)
            if rows is not None:
                seen = {path for row in rows for path in row}
                for p in self.params:
                    if p.path not in seen or (
                        len(declared[p.path]) > 1
                        and not any(p.is_active(row, self.fixed) for row in rows)
                    ):
                        raise ConfigError(
                            f"{p.path}: its conditions ({p.condition()}) can never all hold"
                        )


_KIND_NAMES = {"float": "a float range", "int": "an int range", "categorical": "a choice"}


def _check_alternatives(path: str, alts: Sequence[Param]) -> None:
    """Alternatives of one path: each has a `when`, at most one is active in any trial, and all
    have the kind, `log` and choices that Optuna keeps for the name (ranges may differ)."""
    bare = [i for i, p in enumerate(alts, 1) if not p.when]
    if len(bare) == len(alts):
        raise ConfigError(
            f"parameter {path!r} is declared twice; declare it once, or give each alternative "
            "a `when` so that at most one applies in a trial"
        )
    if bare:
        raise ConfigError(
            f"{path}: alternative {bare[0]} has no `when`; each alternative of a path needs one, "
            "such as when: {model/name: [betatcvae]}"
        )
    first = alts[0]
    for i, p in enumerate(alts[1:], 2):
        if p.kind != first.kind:
            raise ConfigError(
                f"{path}: alternative {i} is {_KIND_NAMES[p.kind]} but alternative 1 is "
                f"{_KIND_NAMES[first.kind]}; "
                "alternatives must share their kind (Optuna keeps one per parameter name)"
            )
        if p.log != first.log:
            raise ConfigError(
                f"{path}: alternative {i} has log: {str(p.log).lower()} but alternative 1 has "
                f"log: {str(first.log).lower()}; alternatives must agree on `log` (Optuna "
                "refuses a changed log for one parameter name); only ranges may differ"
            )
        if p.kind == "categorical" and not (
            len(p.choices) == len(first.choices)
            and all(same_value(a, b) for a, b in zip(p.choices, first.choices))
        ):
            raise ConfigError(
                f"{path}: alternative {i} has choices {_fmt(p.choices)} but alternative 1 has "
                f"{_fmt(first.choices)}; alternatives need the same choices in the same order "
                "(Optuna refuses changed choices for one parameter name)"
            )
    for (i, a), (j, b) in itertools.combinations(enumerate(alts, 1), 2):
        shared = [parent for parent in a.when if parent in b.when]
        overlaps = {
            parent: [v for v in a.when[parent] if any(same_value(v, w) for w in b.when[parent])]
            for parent in shared
        }
        if all(overlaps.values()):  # no shared parent with disjoint values
            if not shared:
                why = "their `when`s share no parent"
            else:
                why = "both apply when " + " and ".join(
                    f"{parent} in {{{', '.join(_fmt(x) for x in v)}}}"
                    for parent, v in overlaps.items()
                )
            raise ConfigError(
                f"{path}: alternatives {i} and {j} can be active in the same trial ({why}); "
                "condition them on one parent with disjoint values, such as model/name"
            )


def _union_distribution(alts: Sequence[Param]) -> BaseDistribution:
    """One distribution holding every value of `alts` (one path's Params; same kind and log)."""
    first = alts[0]
    if len(alts) == 1 or first.kind == "categorical":
        return first.distribution()
    low = min(float(p.low or 0) for p in alts)
    high = max(float(p.high or 0) for p in alts)
    if first.kind == "int":
        step = 0
        for p in alts:  # a grid through every alternative's low and step
            step = math.gcd(step, int(p.step or 1), int(p.low or 0) - int(low))
        return IntDistribution(int(low), int(high), log=first.log, step=step)
    steps = _unique(p.step for p in alts)
    step = steps[0] if len(steps) == 1 else None
    if step is not None:
        for p in alts:
            n = (float(p.low or 0) - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                step = None
                break
    return FloatDistribution(low, high, log=first.log, step=step)


def _flatten_fixed(raw: Any, where: str) -> dict[str, Any]:
    """`fixed:` as "/"-paths; nested sections (`train: {lr: 4e-4}`) are accepted too."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: `fixed` must map config paths to values, got {raw!r}")
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = norm_path(f"{prefix}{key}" if isinstance(key, str) else key, f"{where}: fixed")
            if isinstance(value, Mapping):
                walk(value, path + "/")
                continue
            if path in out:
                raise ConfigError(f"{where}: fixed value {path!r} is given twice")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: fixed {path} must be finite, got {value!r}")
            out[path] = _freeze(_sci_float(value))

    walk(raw, "")
    return out


def from_distributions(
    dists: Mapping[str, BaseDistribution],
    *,
    name: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """A space from `{path: optuna distribution}` (the form of STYLE.md 2.6), no conditions."""
    params: dict[str, Any] = {}
    for key, dist in dists.items():
        if isinstance(dist, CategoricalDistribution):
            params[key] = {"choices": list(dist.choices)}
        elif isinstance(dist, IntDistribution):
            params[key] = {"low": dist.low, "high": dist.high, "type": "int", "log": dist.log}
            if dist.step != 1:
                params[key]["step"] = dist.step
        elif isinstance(dist, FloatDistribution):
            params[key] = {"low": dist.low, "high": dist.high, "log": dist.log}
            if dist.step is not None:
                params[key]["step"] = dist.step
        else:
            raise ConfigError(
                f"{label(name)}: {key}: unsupported distribution {type(dist).__name__}"
            )
    return SearchSpace.from_dict({"params": params, "fixed": dict(fixed or {})}, name=name)
