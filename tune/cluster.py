"""Joining or starting Ray, checking a sweep's requests against it, and per-node preparation.

- `connect` joins an existing cluster (`--address`, or `RAY_ADDRESS`) with token authentication
  switched on, or starts a private local instance; it reuses Ray when already initialised.
- `check_resources` fails fast, before any trial starts, when no node can host one trial.
- `resolve_storage` turns the sweep's storage into an absolute path or passes a URI through, and
  checks that a local folder is creatable, writable and not full.
- `prepare_on_all_nodes` has every node build (or check) its own dataset cache, so no dataset
  travels through the object store and every node verifies the same checksum.
- `process_tree` / `kill_processes` stop exactly the processes one started (`ray stop` kills
  every Ray process on the machine, other users' too).

Ray is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune.errors import ConfigError, DataFileError, MipetTuneError, ResourceError

__all__ = [
    "NodeInfo",
    "ClusterInfo",
    "connect",
    "cluster_info",
    "check_resources",
    "resolve_storage",
    "check_writable",
    "prepare_on_all_nodes",
    "prepare_per_node",
    "process_tree",
    "processes_matching",
    "kill_processes",
    "ProcessReaper",
]

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES = 1_000_000_000
"""`resolve_storage` refuses a local folder with less free space than this (1 GB)."""


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
        cpu = _fmt(self.resources.get("CPU", 0.0))
        gpu = _fmt(self.resources.get("GPU", 0.0))
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


def _fmt(x: float) -> str:
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
      plain `ray.init(address=...)` fails after 20 s without it (`shared/notes/ray-optuna.md`
      section 5). A driver and a cluster that disagree on token auth connect fine but no actor
      (no trial) can start, so a tiny actor is started as a probe; if it cannot start within
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
                f"{type(exc).__name__}: {_first_line(exc)}. {hint}"
            ) from exc
        if probe_timeout_s:
            _probe_actor(address, probe_timeout_s)
        info = cluster_info(started_here=False)
        log.info("joined the Ray cluster at %s: %s", info.address, info.describe())
        return info

    init_kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **init_kwargs)
    except Exception as exc:
        raise ResourceError(
            f"could not start a local Ray instance: {type(exc).__name__}: {_first_line(exc)}"
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------ resources
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
                f"resources.{key}={_fmt(amount)} is impossible: Ray packs fractions of one "
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
        wanted = ", ".join(f"{k} {_fmt(v)}" for k, v in asked.items()) or "nothing"
        extra = sorted({k for k in asked if k not in ("CPU", "GPU")})
        nodes = "; ".join(
            node.describe()
            + "".join(f", {k} {_fmt(node.resources.get(k, 0.0))}" for k in extra)
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
def resolve_storage(
    path_or_uri: str | os.PathLike[str],
    *,
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
) -> str:
    """Resolve a sweep's storage location and check that it can take the sweep.

    Args:
        path_or_uri: a local path (`~` expanded, made absolute), or a URI that Ray's storage
            accepts (`s3://`, `gs://`, `abfs://`, ...), passed through unchecked. A `file://` URI
            is checked like a local path and returned as given.
        min_free_bytes: the least free space a local folder must have.

    Returns:
        The absolute path, or the URI.

    Raises:
        ConfigError: an empty value, or a path that names an existing file.
        ResourceError: the folder cannot be created, is not writable, or its disk is full.
    """
    text = os.fspath(path_or_uri).strip()
    if not text:
        raise ConfigError("storage must be a folder or a URI, got an empty value")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme.lower() != "file":
            return text
        _check_local(Path(rest or "/"), min_free_bytes)
        return text
    folder = Path(text).expanduser().resolve()
    _check_local(folder, min_free_bytes)
    return str(folder)


def check_writable(
    folder: str | os.PathLike[str], *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
) -> Path:
    """Create `folder` if needed and check it takes a write and has `min_free_bytes` free.

    Returns:
        The folder, absolute.

    Raises:
        ConfigError: the path names a file.
        ResourceError: "disk full or not writable" cases, with the folder and the reason.
    """
    path = Path(folder).expanduser().resolve()
    _check_local(path, min_free_bytes)
    return path


def _check_local(folder: Path, min_free_bytes: int) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"storage {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResourceError(
            f"storage folder {folder} cannot be created: {exc.strerror or exc} "
            f"(disk full or not writable?)"
        ) from exc
    probe = folder / f".mipet-write-test-{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "not writable"
        raise ResourceError(f"{what}: {folder}: {exc.strerror or exc}") from exc
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise ResourceError(
            f"disk full: {folder} has {free / 1e9:.2f} GB free, the sweep needs at least "
            f"{min_free_bytes / 1e9:.2f} GB; free space or choose another storage folder"
        )


# ------------------------------------------------------------------------------------ data
def _prepare_here(
    name: str,
    source: str | None,
    cache_dir: str | None,
    prepare_fn: Callable[..., Mapping[str, Any]] | None,
) -> dict[str, Any]:
    """Runs inside a Ray task on one node: build or check this node's dataset cache."""
    import ray

    if prepare_fn is None:
        from tune.data import prepare_dataset as prepare_fn  # lazily, on the node
    started = time.perf_counter()
    info = dict(prepare_fn(name, source=source, cache_dir=cache_dir, progress=False))
    info["node_id"] = ray.get_runtime_context().get_node_id()
    info["hostname"] = socket.gethostname()
    info["seconds"] = time.perf_counter() - started
    return info


def prepare_on_all_nodes(
    name: str,
    source: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float | None = None,
    prepare_fn: Callable[..., Mapping[str, Any]] | None = None,
) -> str:
    """Have every alive node build (or check) its own dataset cache; return the checksum.

    See `prepare_per_node`, which this calls; the nodes agree on the returned checksum.
    """
    per_node = prepare_per_node(
        name, source, cache_dir, timeout_s=timeout_s, prepare_fn=prepare_fn
    )
    return str(next(iter(per_node.values())).get("checksum"))


def prepare_per_node(
    name: str,
    source: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    timeout_s: float | None = None,
    prepare_fn: Callable[..., Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Have every alive node build (or check) its own dataset cache; compare the checksums.

    One small task per node, pinned with `NodeAffinitySchedulingStrategy` and asking for no CPU,
    calls `tune.data.prepare_dataset(name, source=, cache_dir=, progress=False)` there. The
    generation is deterministic and the cache is written atomically, so nodes never wait on each
    other and nothing goes through the object store. `source` and `cache_dir` are paths as each
    node sees them (a shared folder, or the same path on every machine).

    Args:
        name: the dataset name (`dsprites`, `shapes3d`, ...).
        source: the real data file or folder, or None for the built-in generator.
        cache_dir: the cache folder on each node, or None for `tune.data`'s default.
        timeout_s: give up after this many seconds.
        prepare_fn: replaces `tune.data.prepare_dataset` (a module-level function; for tests).

    Returns:
        node id -> the dict `prepare_dataset` returned, plus `node_id`, `hostname`, `seconds`.

    Raises:
        DataFileError: a node failed to prepare the data, or the nodes' checksums differ.
        ResourceError: no alive node, or the timeout passed.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        raise ResourceError(
            "preparing data on the nodes needs Ray: call tune.cluster.connect first"
        )
    nodes = cluster_info().nodes
    if not nodes:
        raise ResourceError("the Ray cluster has no alive node")
    src = None if source is None else os.fspath(source)
    cache = None if cache_dir is None else os.fspath(cache_dir)
    task = ray.remote(_prepare_here)
    refs = {
        node.node_id: task.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
        ).remote(name, src, cache, prepare_fn)
        for node in nodes
    }
    results: dict[str, dict[str, Any]] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    for node_id, ref in refs.items():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            results[node_id] = ray.get(ref, timeout=left)
        except ray.exceptions.GetTimeoutError as exc:
            for other in refs.values():
                ray.cancel(other, force=True)
            raise ResourceError(
                f"dataset {name}: node {node_id[:8]} did not finish preparing it within "
                f"{timeout_s:g} s"
            ) from exc
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, MipetTuneError):
                raise type(cause)(f"node {node_id[:8]}: {cause}") from exc
            raise DataFileError(
                f"dataset {name}: preparing it failed on node {node_id[:8]}: "
                f"{type(cause).__name__}: {_first_line(cause)}"
            ) from exc
    checksums = {node_id: info.get("checksum") for node_id, info in results.items()}
    if len(set(checksums.values())) > 1:
        listing = "; ".join(
            f"node {node_id[:8]} ({results[node_id].get('hostname')}): {checksum}"
            for node_id, checksum in checksums.items()
        )
        raise DataFileError(
            f"dataset {name}: the nodes' caches differ ({listing}). They read different source "
            "files or run different versions of mipet-tune; point every node at the same source "
            "and delete the odd cache."
        )
    log.info(
        "dataset %s ready on %d node(s), checksum %s",
        name,
        len(results),
        next(iter(checksums.values())),
    )
    return results


# ------------------------------------------------------------------------------------ processes
def process_tree(pid: int) -> dict[int, str]:
    """The live descendants of `pid` (not `pid` itself): pid -> command line.

    Record this before killing a Ray driver: `ray::DashboardAgent` and `ray::RuntimeEnvAgent`
    survive a SIGKILL of the driver, re-parented to pid 1, and must be killed by pid.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        cmd = _cmdline(child)
        if cmd is None:
            continue
        out[child] = cmd
        todo.extend(children.get(child, []))
    return out


def processes_matching(text: str) -> dict[int, str]:
    """Processes whose command line contains `text`, with all their descendants: pid -> cmdline.

    With a session folder of your own (`ray start --temp-dir=/tmp/ray-me`), `text` =
    that folder finds exactly the Ray processes you started (raylets, gcs_server, monitors) and,
    through their descendants, the agents and workers, whose command lines do not name it.
    """
    if not text:
        raise ValueError("processes_matching needs a non-empty text")
    out: dict[int, str] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            cmd = _cmdline(int(entry))
            if cmd and text in cmd:
                out[int(entry)] = cmd
    for pid in list(out):
        out.update(process_tree(pid))
    return out


def _cmdline(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def kill_processes(processes: Mapping[int, str] | Iterable[int], *, grace_s: float = 3.0) -> int:
    """SIGTERM, then after `grace_s` SIGKILL, exactly these processes; return how many were alive.

    With a mapping pid -> command line (from `process_tree`), a pid whose command line changed
    (the pid was reused) is left alone.
    """
    wanted = dict(processes) if isinstance(processes, Mapping) else {p: None for p in processes}

    def alive() -> list[int]:
        out = []
        for pid, cmd in wanted.items():
            now = _cmdline(pid)
            if now is None or (cmd is not None and now != cmd):
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as fh:
                    if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue  # a zombie; its parent will reap it
            except OSError:
                continue
            out.append(pid)
        return out

    first = alive()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive():
            break
    return len(first)


class ProcessReaper:
    """Track every descendant of a process while it runs; kill the survivors afterwards.

    For a driver that starts its own Ray instance: Ray's agents outlive a killed driver, so the
    tree must be recorded while the driver is alive. `reap()` kills (by pid, checking each
    command line) whatever is still alive of what was seen, and returns how many it killed.

    Example:
        >>> proc = subprocess.Popen([sys.executable, "driver.py"])
        >>> with ProcessReaper(proc.pid) as reaper:
        ...     proc.wait()
        >>> reaper.killed  # stragglers killed on exit
    """

    def __init__(self, pid: int, *, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.seen: dict[int, str] = {}
        self.killed = 0
        self._interval = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def sample(self) -> dict[int, str]:
        """Record the current descendants now (call it right before killing the root)."""
        tree = process_tree(self.pid)
        with self._lock:
            self.seen.update(tree)
        return tree

    def reap(self, *, grace_s: float = 3.0) -> int:
        """Stop tracking; kill the recorded processes still alive; return how many."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            seen = dict(self.seen)
        self.killed += kill_processes(seen, grace_s=grace_s)
        return self.killed

    def __enter__(self) -> ProcessReaper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()
