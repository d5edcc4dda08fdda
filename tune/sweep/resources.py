"""`check_resources`: fail fast, before any trial starts, when no node can host one trial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from tune.errors import ConfigError, ResourceError
from tune.sweep.connect import ClusterInfo, fmt_amount

log = logging.getLogger(__name__)


_RESOURCE_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}


def _normalise(per_trial: Mapping[str, Any]) -> dict[str, float]:
    asked: dict[str, float] = {}
    for key, value in per_trial.items():
        name = _RESOURCE_NAMES.get(str(key).lower(), str(key))
        if isinstance(value, bool):
            raise ConfigError(f"resources.{key} must be a number, got {value!r}")
        try:
            amount = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"resources.{key} must be a number, got {value!r}") from exc
        if not math.isfinite(amount) or amount < 0:
            raise ConfigError(f"resources.{key} must be a finite number >= 0, got {value!r}")
        if amount > 1 and not amount.is_integer():
            raise ResourceError(
                f"resources.{key}={fmt_amount(amount)} is impossible: Ray packs fractions of one "
                f"{name} only; ask for a fraction <= 1 (several trials share one {name}) or a "
                f"whole number"
            )
        if amount > 0:
            asked[name] = amount
    return asked


def _fits_on(asked: Mapping[str, float], resources: Mapping[str, float]) -> int:
    """How many trials asking `asked` one node with `resources` can run at once."""
    capacity = math.inf
    for name, amount in asked.items():
        have = float(resources.get(name, 0.0))
        if amount < 1 and name == "GPU":
            # A fraction never spans two GPUs: each whole GPU holds floor(1 / amount) trials.
            per_unit = math.floor(1.0 / amount + 1e-9)
            capacity = min(capacity, math.floor(have + 1e-9) * per_unit)
        else:
            capacity = min(capacity, math.floor(have / amount + 1e-9))
    return 0 if capacity is math.inf else int(capacity)


def check_resources(
    per_trial: Mapping[str, Any],
    max_concurrent: int | None,
    cluster: ClusterInfo,
) -> int:
    """Check that the cluster can run the sweep's trials; return how many can run at once.

    A trial is placed on one node, so a request must fit a single node, not the cluster's sum.
    A fractional GPU request (0 < gpu < 1) needs a node with at least one GPU; each GPU then holds
    floor(1 / gpu) trials.

    Args:
        per_trial: one trial's request, e.g. `{"cpu": 2, "gpu": 0.25}` (keys case-insensitive;
            "memory" in bytes and custom resources allowed).
        max_concurrent: the sweep's maximum concurrency, or None.
        cluster: from `connect`.

    Returns:
        The number of trials the alive nodes can run at once (before other users' load).

    Raises:
        ConfigError: a negative or non-numeric request.
        ResourceError: an impossible request (gpu 1.5), or no node can host one trial; the
            message names what was asked and what each node has.
    """
    asked = _normalise(per_trial)
    if not cluster.nodes:
        raise ResourceError("the Ray cluster has no alive node")
    per_node = [(node, _fits_on(asked, node.resources)) for node in cluster.nodes]
    capacity = sum(n for _, n in per_node)
    if capacity == 0:
        wanted = ", ".join(f"{k} {fmt_amount(v)}" for k, v in asked.items()) or "nothing"
        extra = sorted({k for k in asked if k not in ("CPU", "GPU")})
        nodes = "; ".join(
            node.describe()
            + "".join(f", {k} {fmt_amount(node.resources.get(k, 0.0))}" for k in extra)
            for node in cluster.nodes
        )
        hint = "lower resources.cpu/resources.gpu"
        if asked.get("GPU") and not any(n.resources.get("GPU") for n in cluster.nodes):
            hint = "set resources.gpu to 0 (no node has a GPU), or add GPU nodes"
        raise ResourceError(
            f"no node can host one trial: a trial asks for {wanted}, and the nodes have: "
            f"{nodes}. {hint[0].upper()}{hint[1:]}."
        )
    if max_concurrent is not None and capacity < max_concurrent:
        log.warning(
            "at most %d trial(s) can run at once on this cluster (%s), fewer than "
            "max_concurrent=%d",
            capacity,
            ", ".join(f"{n.node_id[:8]}: {k}" for n, k in per_node),
            max_concurrent,
        )
    return capacity if max_concurrent is None else min(capacity, max_concurrent)


# ------------------------------------------------------------------------------------ storage
