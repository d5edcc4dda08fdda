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

The parts: `_values.py` (frozen values, equality, paths), `_param.py` (`Param` and its parsing),
`_structure.py` (the checks of a space on its own, run when one is built), `_validate.py` (the
checks against the models and the run config), `_load.py` (presets, files, modules).
"""

from __future__ import annotations

import itertools
import logging
import math
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from models.errors import ConfigError
from models.strict import nearest

# Param and FrozenMap are imported here also for pickles written before they moved: Ray's
# searcher checkpoints and `tuner.pkl` name them `search_spaces._space.Param`/`.FrozenMap`.
from search_spaces._param import Param, parse_declaration
from search_spaces._structure import check_structure
from search_spaces._validate import validate
from search_spaces._values import (
    DEFAULT_CORNER_LIMIT,
    DEFAULT_GRID_LIMIT,
    FrozenMap,
    fmt,
    freeze,
    label,
    norm_path,
    sci_float,
    thaw,
    unique,
)

log = logging.getLogger(__name__)

SPACE_KEYS = ("name", "description", "params", "fixed")


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
        object.__setattr__(self, "fixed", FrozenMap((k, freeze(v)) for k, v in fixed.items()))
        try:
            check_structure(self)
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
        out["fixed"] = {k: thaw(v) for k, v in self.fixed.items()}
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
        return {k: thaw(v) for k, v in self.fixed.items()}

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
                    out[parent] = unique(out.get(parent, ()) + tuple(allowed))
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
                merged.update(zip((p.path for p in free), combo, strict=True))
                rows.append({p.path: merged[p.path] for p in self.params if p.path in merged})
                if len(rows) > limit:
                    return None
        return rows

    def _corner_values(self) -> Callable[[Param], Sequence[Any]]:
        parents = self._parents()

        def values_for(p: Param) -> Sequence[Any]:  # a value conditions name, if p can take it
            named = tuple(v for v in parents.get(p.path, ()) if p.can_take(v))
            return unique(p.corner_values() + named)

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
            lines += [f"    {k:<{width}} = {fmt(v)}" for k, v in self.fixed.items()]
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
        validate(self, known_paths=known_paths, check=check, model_names=model_names)


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
    steps = unique(p.step for p in alts)
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
            out[path] = freeze(sci_float(value))

    walk(raw, "")
    return out


def from_distributions(
    dists: Mapping[str, BaseDistribution],
    *,
    name: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """A space from `{path: optuna distribution}` (what `OptunaSearch` takes), no conditions."""
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
