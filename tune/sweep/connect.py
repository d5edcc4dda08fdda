"""Joining or starting Ray: `connect` joins an existing cluster (`--address`, or
`RAY_ADDRESS`) with token authentication switched on, or starts a private local instance; it reuses
Ray when already initialised. `cluster_info` describes the alive nodes.

Ray is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune.errors import ResourceError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ cluster
@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node.

    Attributes:
        node_id: Ray's hex node id.
        address: the node's IP address.
        resources: its total logical resources ("CPU", "GPU", "memory", custom ...).
        is_head: whether it is the head node.
    """

    node_id: str
    address: str
    resources: dict[str, float]
    is_head: bool = False

    def describe(self) -> str:
        cpu = fmt_amount(self.resources.get("CPU", 0.0))
        gpu = fmt_amount(self.resources.get("GPU", 0.0))
        head = ", head" if self.is_head else ""
        return f"node {self.node_id[:8]} ({self.address}{head}): CPU {cpu}, GPU {gpu}"


@dataclass(frozen=True)
class ClusterInfo:
    """The Ray instance a sweep runs on.

    Attributes:
        address: the GCS address of the cluster ("host:port").
        started_here: True when `connect` started a local instance (the caller shuts it down).
        nodes: the alive nodes.
        total: `ray.cluster_resources()` at connect time.
        available: `ray.available_resources()` at connect time.
    """

    address: str | None
    started_here: bool
    nodes: tuple[NodeInfo, ...]
    total: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        return "; ".join(node.describe() for node in self.nodes) or "no alive node"


def fmt_amount(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def cluster_info(*, started_here: bool = False) -> ClusterInfo:
    """Describe the Ray instance this process is connected to (Ray must be initialised)."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive", node.get("alive", False)):
            continue
        resources = {k: float(v) for k, v in node.get("Resources", {}).items()}
        is_head = any(k.startswith("node:__internal_head__") for k in resources)
        resources = {k: v for k, v in resources.items() if not k.startswith("node:")}
        nodes.append(
            NodeInfo(
                node_id=node["NodeID"],
                address=node.get("NodeManagerAddress", "?"),
                resources=resources,
                is_head=is_head,
            )
        )
    nodes.sort(key=lambda n: (not n.is_head, n.node_id))
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # pragma: no cover - depends on Ray internals
        address = None
    return ClusterInfo(
        address=address,
        started_here=started_here,
        nodes=tuple(nodes),
        total={k: float(v) for k, v in ray.cluster_resources().items()},
        available={k: float(v) for k, v in ray.available_resources().items()},
    )


_AUTH_HINT = (
    "If the cluster uses token authentication (the default for clusters started with Ray >= "
    "2.59), set RAY_AUTH_MODE=token and give this machine the head's token (copy "
    "~/.ray/auth_token, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)."
)


def connect(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    verbose: bool = False,
    probe_timeout_s: float = 60.0,
    **init_kwargs: Any,
) -> ClusterInfo:
    """Join an existing Ray cluster, or start a private local instance.

    - Ray already initialised in this process (a test session, a notebook): reuse it.
    - `address` (or the `RAY_ADDRESS` environment variable) given: join that cluster. Unless
      the user set `RAY_AUTH_MODE`, it is set to "token" when a token is available
      (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`), as Ray itself does for
      "auto" only: a cluster started with `ray start` on Ray >= 2.59 checks a token, and a
      plain `ray.init(address=...)` fails after 20 s without it (measured with Ray 2.60). A
      driver and a cluster that disagree on token auth connect fine but no actor (no trial) can
      start, so a tiny actor is started as a probe; if it cannot start within
      `probe_timeout_s`, the error says to set `RAY_AUTH_MODE` to match the cluster.
    - Otherwise: start a new local instance (never attach to a `ray start` cluster by accident),
      without dashboard, without forwarding worker logs unless `verbose`.

    Usage statistics are switched off (`RAY_USAGE_STATS_ENABLED=0`) unless the user set them.

    Args:
        address: "auto", "host:port", "ray://host:port", or None.
        num_cpus, num_gpus: logical resources of a local instance (ignored, with a warning, when
            joining a cluster: a cluster declares its own).
        verbose: forward the trials' stdout/stderr to this process.
        probe_timeout_s: when joining a cluster, how long the probe actor may take (0: no probe).
        **init_kwargs: passed to `ray.init` (for example `object_store_memory`, `_temp_dir`).

    Returns:
        `ClusterInfo` with `started_here=True` when a local instance was started.

    Raises:
        ResourceError: the cluster cannot be reached or refused the connection.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        if address:
            log.info("Ray is already initialised in this process; using it, not %s", address)
        return cluster_info(started_here=False)

    address = address or os.environ.get("RAY_ADDRESS") or None
    init_kwargs.setdefault("log_to_driver", verbose)
    if address and address != "local":
        return _join_cluster(address, num_cpus, num_gpus, probe_timeout_s, init_kwargs)
    return _start_local(num_cpus, num_gpus, init_kwargs)


def _join_cluster(address: str, num_cpus: float | None, num_gpus: float | None,
                  probe_timeout_s: float, init_kwargs: dict[str, Any]) -> ClusterInfo:
    """`connect` to an existing cluster: token auth when available, then the probe actor."""
    import ray

    dropped = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus)) if v}
    if dropped:
        log.warning(
            "joining the cluster at %s: %s apply to a local instance only; ignored",
            address,
            ", ".join(dropped),
        )
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        _enable_token_auth()
    init_kwargs.pop("include_dashboard", None)
    try:
        ray.init(address=address, **init_kwargs)
    except Exception as exc:
        auth = _mentions_auth(exc)
        hint = _AUTH_HINT if auth else (
            "Check the address (ray status on the head prints it) and that this machine "
            "can reach the head's GCS port. " + _AUTH_HINT
        )
        raise ResourceError(
            f"could not join the Ray cluster at {address!r}: "
            f"{type(exc).__name__}: {first_line(exc)}. {hint}"
        ) from exc
    if probe_timeout_s:
        _probe_actor(address, probe_timeout_s)
    info = cluster_info(started_here=False)
    log.info("joined the Ray cluster at %s: %s", info.address, info.describe())
    return info


def _start_local(num_cpus: float | None, num_gpus: float | None,
                 init_kwargs: dict[str, Any]) -> ClusterInfo:
    """`connect` without an address: a new private local instance, without dashboard."""
    import ray

    init_kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **init_kwargs)
    except Exception as exc:
        raise ResourceError(
            f"could not start a local Ray instance: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    info = cluster_info(started_here=True)
    log.info("started a local Ray instance: %s", info.describe())
    return info


def _enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this process and its children, also if Ray is already imported.

    Ray caches its configuration when imported; its own helper refreshes the cache.
    """
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth as refresh,
        )

        refresh()
    except Exception:  # pragma: no cover - the private helper moved; the env var still counts
        try:
            from ray._raylet import Config

            Config.initialize("")
        except Exception:
            log.debug("could not refresh Ray's cached config after setting RAY_AUTH_MODE")


def _mentions_auth(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if "auth" in f"{type(current).__name__} {current}".lower():
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def _token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidates = [Path(path).expanduser()] if path else []
    candidates.append(Path.home() / ".ray" / "auth_token")
    return any(p.is_file() for p in candidates)


class _Probe:
    def ping(self) -> int:
        return 1


def _probe_actor(address: str, timeout_s: float) -> None:
    """Start one tiny actor and call it: the thing every trial needs, checked up front."""
    import ray

    actor = ray.remote(num_cpus=0)(_Probe).remote()
    try:
        ray.get(actor.ping.remote(), timeout=timeout_s)
    except Exception as exc:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        other = "disabled" if mode == "token" else "token"
        ray.shutdown()
        raise ResourceError(
            f"joined the Ray cluster at {address!r}, but no actor could start and answer within "
            f"{timeout_s:g} s ({type(exc).__name__}), so no trial could run. Usually this "
            f"driver and the cluster disagree on token authentication: here RAY_AUTH_MODE is "
            f"{mode}; if the cluster was started with RAY_AUTH_MODE={other} (or without token "
            f"auth), set RAY_AUTH_MODE={other} for this command. Otherwise the cluster is busy or "
            "its nodes cannot start workers (see `ray status`)."
        ) from exc
    finally:
        try:
            ray.kill(actor)
        except Exception:
            pass


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


