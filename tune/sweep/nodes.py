"""`prepare_on_all_nodes`: every node builds (or checks) its own dataset cache, so no dataset
travels through the object store and every node verifies the same checksum.

Ray is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from tune.errors import DataFileError, MipetTuneError, ResourceError
from tune.sweep.connect import cluster_info, first_line

log = logging.getLogger(__name__)


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

    if not ray.is_initialized():
        raise ResourceError(
            "preparing data on the nodes needs Ray: call tune.sweep.connect.connect first"
        )
    nodes = cluster_info().nodes
    if not nodes:
        raise ResourceError("the Ray cluster has no alive node")
    src = None if source is None else os.fspath(source)
    cache = None if cache_dir is None else os.fspath(cache_dir)
    refs = _start_on_each_node([node.node_id for node in nodes], name, src, cache, prepare_fn)
    results = _collect(refs, name, timeout_s)
    checksum = _agreed_checksum(name, results)
    log.info("dataset %s ready on %d node(s), checksum %s", name, len(results), checksum)
    return results


def _start_on_each_node(node_ids: list[str], name: str, src: str | None, cache: str | None,
                        prepare_fn: Callable[..., Mapping[str, Any]] | None) -> dict[str, Any]:
    """One `_prepare_here` task pinned to each node, asking for no CPU: node id -> its ref."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(_prepare_here)
    return {
        node_id: task.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(name, src, cache, prepare_fn)
        for node_id in node_ids
    }


def _collect(refs: dict[str, Any], name: str,
             timeout_s: float | None) -> dict[str, dict[str, Any]]:
    """Every node's result, within `timeout_s` in all; a node's failure names the node."""
    import ray

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
                f"{type(cause).__name__}: {first_line(cause)}"
            ) from exc
    return results


def _agreed_checksum(name: str, results: dict[str, dict[str, Any]]) -> Any:
    """The checksum every node reported; DataFileError listing them if they differ."""
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
    return next(iter(checksums.values()))
