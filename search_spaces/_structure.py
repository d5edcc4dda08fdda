"""The structural checks of a `SearchSpace`: what makes a space malformed on its own, before any
model or config is asked (`_validate.py` checks the space against those).

- parameters are `Param`s; one path is declared once, or as alternatives one after another;
- no path is both a parameter and a fixed value;
- a `when` names an earlier parameter (a categorical or stepped one) or a fixed value, with values
  it can take; conditions that can never all hold are refused;
- alternatives of one path each have a `when`, at most one is active in any trial, and they share
  kind, `log` and choices (Optuna keeps one distribution per parameter name in a study).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.errors import ConfigError
from models.strict import nearest
from search_spaces._param import Param
from search_spaces._values import DEFAULT_CORNER_LIMIT, fmt, same_value

if TYPE_CHECKING:
    from search_spaces._space import SearchSpace


def check_structure(space: SearchSpace) -> None:
    """Check `space` on its own (see the module docstring).

    Raises:
        ConfigError: the first problem, in one line (without the space's name; the caller adds
            it).
    """
    declared: dict[str, list[Param]] = {}
    all_names = [p.path for p in space.params]
    last = None
    for p in space.params:
        if not isinstance(p, Param):
            raise ConfigError(f"parameters must be Param objects, got {p!r}")
        if p.path in declared and p.path != last:
            raise ConfigError(
                f"parameter {p.path!r} is declared twice apart; declare alternatives of a "
                "path one after another (one list in YAML)"
            )
        if p.path in space.fixed:
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
            elif parent in space.fixed:
                if not any(same_value(space.fixed[parent], a) for a in allowed):
                    raise ConfigError(
                        f"{p.path}: when {parent} in {fmt(tuple(allowed))}: never true, "
                        f"{parent} is fixed to {fmt(space.fixed[parent])}"
                    )
            elif parent in all_names:
                raise ConfigError(
                    f"{p.path}: when {parent}: {parent} must be declared before {p.path} "
                    "(parameters are suggested in order)"
                )
            else:
                raise ConfigError(
                    f"{p.path}: when {parent!r}: no such parameter or fixed value; "
                    f"{nearest(parent, all_names + list(space.fixed))}"
                )
        declared.setdefault(p.path, []).append(p)
        last = p.path
    for path, alts in declared.items():
        if len(alts) > 1:
            _check_alternatives(path, alts)
    if space.params:
        rows = space._rows(space._corner_values(), full=False, limit=100 * DEFAULT_CORNER_LIMIT)
        if rows is not None:
            seen = {path for row in rows for path in row}
            for p in space.params:
                if p.path not in seen or (
                    len(declared[p.path]) > 1
                    and not any(p.is_active(row, space.fixed) for row in rows)
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
            and all(same_value(a, b) for a, b in zip(p.choices, first.choices, strict=True))
        ):
            raise ConfigError(
                f"{path}: alternative {i} has choices {fmt(p.choices)} but alternative 1 has "
                f"{fmt(first.choices)}; alternatives need the same choices in the same order "
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
                    f"{parent} in {{{', '.join(fmt(x) for x in v)}}}"
                    for parent, v in overlaps.items()
                )
            raise ConfigError(
                f"{path}: alternatives {i} and {j} can be active in the same trial ({why}); "
                "condition them on one parent with disjoint values, such as model/name"
            )

