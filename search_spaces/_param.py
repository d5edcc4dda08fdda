"""`Param`: one searched setting (a float range, an int range or a categorical choice), and its
parsing from the YAML form (`parse_declaration`, `parse_param`, `parse_when`).

A Param is named by a `"model/beta"`-style path into the run config and is optionally active only
`when` earlier parameters take given values. Alternatives of one path are several Params with
that path; `SearchSpace` (`_space.py`) and its structural checks (`_structure.py`) hold them
together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
from search_spaces._values import (
    FrozenMap,
    fmt,
    freeze,
    norm_path,
    same_value,
    sci_float,
    thaw,
    unique,
)

Kind = Literal["float", "int", "categorical"]
PARAM_KEYS = ("choices", "low", "high", "log", "step", "type", "when")


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
        return unique((self.low, self.high))

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
            return "{" + ", ".join(fmt(c) for c in self.choices) + "}"
        text = f"{self.kind} [{fmt(self.low)}, {fmt(self.high)}]"
        if self.log:
            text += " log"
        if self.step is not None and not (self.kind == "int" and self.step == 1):
            text += f" step {fmt(self.step)}"
        return text

    def condition(self) -> str:
        parts = []
        for parent, allowed in self.when.items():
            if len(allowed) == 1:
                parts.append(f"{parent} = {fmt(allowed[0])}")
            else:
                parts.append(f"{parent} in {{{', '.join(fmt(a) for a in allowed)}}}")
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
                p: (thaw(a[0]) if len(a) == 1 else [thaw(v) for v in a])
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
        out[parent] = freeze(unique(values))
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
        choices = [sci_float(c) for c in choices]
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise ConfigError(
                    f"{here}: choice {c!r} is a {type(c).__name__}; Optuna choices must be "
                    "None, bool, int, float or str (put a list-valued setting under `fixed:`)"
                )
            if isinstance(c, float) and not math.isfinite(c):
                raise ConfigError(f"{here}: choice {c!r} is not finite")
        if len(unique(choices)) != len(choices):
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
            f"{here}: empty range: low={fmt(low)} must be below high={fmt(high)} "
            "(a single value goes under `fixed:`)"
        )
    if use_log and low <= 0:
        raise ConfigError(
            f"{here}: a log range must stay above zero, got low={fmt(low)}; use a small "
            "positive low (such as 1.0e-6) or drop `log: true`"
        )
    if step is not None and step <= 0:
        raise ConfigError(f"{here}: step must be > 0, got {fmt(step)}")
    if use_log and step_given is not None and not (kind == "int" and step == 1):
        raise ConfigError(
            f"{here}: `step` cannot be combined with `log: true` (Optuna forbids it)"
        )
    if step is not None:
        n = (high - low) / step
        if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
            top = low + math.floor(n + 1e-9) * step
            raise ConfigError(
                f"{here}: step {fmt(step)} does not fit the range [{fmt(low)}, {fmt(high)}]: "
                f"high - low must be a multiple of it; use high: {fmt(top)}"
            )
    return Param(path, kind, low=low, high=high, log=use_log, step=step, when=when)

