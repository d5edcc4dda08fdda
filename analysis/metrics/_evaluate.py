"""``evaluate``: run a set of metrics under one of three protocols; ``evaluate_group``: one
group metric (UDR) over the models of a configuration. What to run, with which budgets, comes
from the records of :mod:`analysis.metrics.registry`; nothing here names a metric."""

from __future__ import annotations

import inspect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._utils import Represent, sample_codes
from analysis.metrics.cache import CachedRepresentation
from analysis.metrics.registry import DEFAULT_METRICS, PROTOCOL_NAMES, Metric, get, unknown

log = logging.getLogger(__name__)


def _records(protocol: str, metrics: Sequence[str] | str | None) -> list[Metric]:
    """The records to run: known, single-model and run under ``protocol``."""
    if protocol not in PROTOCOL_NAMES:
        raise unknown("protocol", protocol, PROTOCOL_NAMES)
    if isinstance(metrics, str):
        metrics = [metrics]
    names = list(DEFAULT_METRICS[protocol] if metrics is None else metrics)
    records = [get(name) for name in names]
    for rec in records:
        if rec.group:
            raise AnalysisError(
                f"evaluate: {rec.name!r} scores a group of at least {rec.min_models} models of "
                "one configuration; call analysis.metrics.evaluate_group with their "
                "representations."
            )
        if protocol == "mipet" and rec.budgets["mipet"] is None:
            raise AnalysisError(
                f"evaluate(protocol='mipet'): the paper's protocol has no '{rec.name}'; choose "
                f"from {list(DEFAULT_METRICS['mipet'])} or use protocol='dlib'."
            )
        rec.budget(protocol)  # not run under this protocol: one clear error
    return records


def _budgets(protocol: str, records: Sequence[Metric], overrides: Mapping[str, Any]) -> dict:
    for key, value in overrides.items():
        get(key)
        if not isinstance(value, Mapping):
            raise AnalysisError(
                f"evaluate: override {key}= must be a dict of keyword arguments, e.g. "
                f"{key}={{'num_train': 1000}}; got {value!r}."
            )
    return {r.name: {**r.budget(protocol), **dict(overrides.get(r.name, {}))} for r in records}


def _as_result(rec: Metric, value: Any) -> dict[str, float]:
    """A metric's return value as {key: float}, checked against its record's keys."""
    result = {next(iter(rec.keys)): value} if not isinstance(value, Mapping) else dict(value)
    if set(result) != set(rec.keys):
        raise AnalysisError(
            f"metric {rec.name!r} returned keys {sorted(result)}; its record says "
            f"{sorted(rec.keys)}."
        )
    return {k: float(result[k]) for k in rec.keys}


def _run_mipet(
    data: Any, represent: Represent, records: Sequence[Metric], seed: int, budgets: dict
) -> dict[str, float]:
    """The paper's protocol: a metric with a fixed-data core scores the shared sample (its
    "test" set drawn again with the same seed, i.e. the start of the training sample); the
    others get a fresh ``RandomState(seed)``."""
    out: dict[str, float] = {}

    def shared(num: int, batch_size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        return sample_codes(data, represent, num, np.random.RandomState(seed), batch_size, where)

    for rec in records:
        b = dict(budgets[rec.name])
        core = rec.load_from_codes()
        if core is None:
            out.update(_as_result(rec, rec.load()(data, represent, np.random.RandomState(seed),
                                                   **b)))
            continue
        batch = b.pop("batch_size")
        args = [*shared(b.pop("num_train"), batch, rec.name)]
        if "num_test" in b:
            args += shared(b.pop("num_test"), batch, rec.name)
        if "seed" in inspect.signature(core).parameters:
            b["seed"] = seed
        out.update(_as_result(rec, core(*args, **b)))
    return out


def evaluate(
    data: Any,
    represent: Represent,
    *,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    protocol: str = "dlib",
    n_jobs: int = 1,
    **overrides: Mapping[str, Any],
) -> dict[str, float]:
    """Run a set of metrics; a flat dict of all their keys.

    Protocols:
        ``"dlib"``: each metric gets a fresh ``RandomState(seed)`` and dlib's study budgets
        (disentanglement_lib's ``evaluate.py``). Default set: all eight metrics.
        ``"fast"``: the same with the small budgets of ``PROTOCOLS["fast"]`` (DCI with 20
        boosting stages instead of 100); for progress reports during training. Default set:
        factor_vae, mig, dci, sap, modularity_explicitness.
        ``"mipet"``: the MIPET-VAEs paper code's evaluation in its order
        FactorVAE, SAP, DCI, MIG: FactorVAE with 100-image batches, a 100-image variance
        estimate, threshold 0, 800 votes and the training accuracy as score, its votes drawn
        from ``RandomState(seed)`` (the paper re-seeds from the clock: fixed here). SAP, DCI
        and MIG on 10,000 points drawn in batches of 100 from ``RandomState(seed)``, the test
        set being the first 5,000 of them (as the paper). Use it with sampled codes
        (:func:`evaluate_encoder` with ``sample=True``, its default for this protocol).

    Args:
        data: ground-truth data (dlib interface).
        represent: observations (N, H, W, C) float32 -> codes (N, num_codes).
        metrics: names of single-model metrics in the registry
            (:mod:`analysis.metrics.registry`); None: the protocol's default set.
        seed: the metric seed.
        protocol: ``"dlib"``, ``"fast"`` or ``"mipet"``.
        n_jobs: run up to this many metrics at once in threads ("dlib"/"fast"; every metric
            has its own ``RandomState(seed)``, so the values do not change). ``represent``
            must then be thread-safe (:class:`CachedRepresentation` is, for deterministic
            codes). DCI also fits its factors in parallel on its own.
        **overrides: per-metric budget keywords, e.g. ``dci={"num_train": 2000}``.
    Returns:
        {result key: float}. See ``RESULT_KEYS`` for each key's direction.
    Raises:
        AnalysisError: unknown protocol/metric/override, a metric not run under the
            protocol or scoring a group, bad budgets, non-finite codes
            (:class:`~analysis.metrics.NonFiniteCodesError`).
    """
    records = _records(protocol, metrics)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise AnalysisError(f"evaluate: seed must be an integer, got {seed!r}.")
    budgets = _budgets(protocol, records, overrides)
    if protocol == "mipet":
        return _run_mipet(data, represent, records, int(seed), budgets)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise AnalysisError(f"evaluate: n_jobs must be an integer >= 1, got {n_jobs!r}.")

    def one(rec: Metric) -> dict[str, float]:
        start = time.perf_counter()
        value = rec.load()(data, represent, np.random.RandomState(int(seed)), **budgets[rec.name])
        log.debug("%s took %.2f s", rec.name, time.perf_counter() - start)
        return _as_result(rec, value)

    if n_jobs == 1 or len(records) == 1:
        results = [one(rec) for rec in records]
    else:
        # Costliest first (DCI, BetaVAE), so the pool is not left waiting on them at the end.
        costly = sorted(records, key=lambda r: -r.cost)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = {rec.name: pool.submit(one, rec) for rec in costly}
            results = [futures[rec.name].result() for rec in records]
    out: dict[str, float] = {}
    for result in results:
        out.update(result)
    return out


def evaluate_encoder(
    data: Any,
    encode: Callable[[np.ndarray], Any],
    *,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
    protocol: str = "dlib",
    sample: bool | None = None,
    batch_size: int = 2048,
    n_jobs: int = 1,
    **overrides: Mapping[str, Any],
) -> dict[str, float]:
    """:func:`evaluate` through a :class:`CachedRepresentation` (each image encoded once).

    Args:
        data: ground-truth data with ``index_of`` and ``images_at``.
        encode: uint8 images (N, H, W, C) -> codes (N, D), or (mu, logvar) when sampling.
        sample: score sampled codes from (mu, logvar); None: True for ``protocol="mipet"``
            (the paper scores sampled z), else False. The noise comes from
            ``numpy.random.default_rng([seed, 1])``.
        batch_size: images per ``encode`` call.
        n_jobs: metrics at once (as :func:`evaluate`); forced to 1 when sampling, so that
            the noise is drawn in a reproducible order. ``encode`` is never called from two
            threads at once.
        metrics, seed, protocol, overrides: as :func:`evaluate`.
    """
    use_sample = (protocol == "mipet") if sample is None else bool(sample)
    cache = CachedRepresentation(
        data,
        encode,
        batch_size=batch_size,
        sample=use_sample,
        rng=np.random.default_rng([int(seed), 1]),
    )
    return evaluate(
        cache.data,
        cache.represent,
        metrics=metrics,
        seed=seed,
        protocol=protocol,
        n_jobs=1 if use_sample else n_jobs,
        **overrides,
    )


def evaluate_group(
    data: Any,
    represent_fns: Sequence[Callable[[np.ndarray], Any]],
    *,
    metric: str,
    seed: int = 0,
    protocol: str = "dlib",
    **overrides: Any,
) -> dict[str, Any]:
    """Run one group metric (``udr_lasso``, ``udr_spearman``) over several models.

    Args:
        data: data with ``sample_observations(n, random_state)`` (no factors needed).
        represent_fns: one function per model, as the metric's function asks (UDR:
            observations -> (mean (N, D), logvar (N, D))).
        metric: the group metric's name.
        seed: the metric seed (a fresh ``RandomState(seed)``).
        protocol: ``"dlib"`` or ``"fast"``.
        **overrides: budget keywords, e.g. ``num_data_points=2000``.
    Returns:
        ``{key: mean of the model scores, "model_scores": [M floats], ...}`` (the function's
        other outputs, e.g. UDR's ``pairwise``, kept).
    Raises:
        AnalysisError: unknown or single-model metric, too few models, not run under
            ``protocol``.
    """
    rec = get(metric)
    if not rec.group:
        raise AnalysisError(f"evaluate_group: {metric!r} scores one model; use evaluate.")
    if len(represent_fns) < rec.min_models:
        raise AnalysisError(
            f"evaluate_group: {metric!r} needs at least {rec.min_models} models, got "
            f"{len(represent_fns)}; train more seeds of the configuration."
        )
    budget = {**rec.budget(protocol), **overrides}
    out = dict(rec.load()(data, list(represent_fns), np.random.RandomState(int(seed)), **budget))
    scores = np.asarray(out["model_scores"], dtype=np.float64)
    key = next(iter(rec.keys))
    out[key] = float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
    return out
