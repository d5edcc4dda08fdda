"""``evaluate``: run a set of metrics under one of three protocols."""

from __future__ import annotations

import difflib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._beta_vae import beta_vae
from analysis.metrics._dci import dci, dci_from_codes
from analysis.metrics._factor_vae import factor_vae
from analysis.metrics._irs import irs
from analysis.metrics._mig import mig, mig_from_codes
from analysis.metrics._modularity import modularity_explicitness
from analysis.metrics._sap import sap, sap_from_codes
from analysis.metrics._unsupervised import unsupervised
from analysis.metrics._utils import Represent, sample_codes
from analysis.metrics.cache import CachedRepresentation

log = logging.getLogger(__name__)

#: Metric name -> function, in disentanglement_lib's order.
METRICS: dict[str, Callable[..., dict[str, float]]] = {
    "beta_vae": beta_vae,
    "factor_vae": factor_vae,
    "mig": mig,
    "dci": dci,
    "sap": sap,
    "irs": irs,
    "modularity_explicitness": modularity_explicitness,
    "unsupervised": unsupervised,
}

#: Metric name -> the keys of its result.
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "beta_vae": ("beta_vae_train", "beta_vae"),
    "factor_vae": ("factor_vae_train", "factor_vae"),
    "mig": ("mig",),
    "dci": (
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness_train",
        "dci_informativeness_test",
    ),
    "sap": ("sap",),
    "irs": ("irs",),
    "modularity_explicitness": ("modularity", "explicitness_train", "explicitness_test"),
    "unsupervised": (
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    ),
}

#: Result key -> "max" (higher is better) or "min" (lower is better). The unsupervised scores
#: measure dependence between latents (0 = independent), so lower is better; they are not
#: disentanglement scores (noise and rotations of independent latents also sit at 0).
RESULT_KEYS: dict[str, str] = {
    key: ("min" if name == "unsupervised" else "max")
    for name, keys in METRIC_KEYS.items()
    for key in keys
}

#: Metrics that give the same value when latents are permuted / have their signs flipped
#: (in distribution; BetaVAE's classifier and DCI's trees are not exactly invariant).
LATENT_ORDER_INVARIANT = tuple(METRICS)
#: Metrics whose values lie in [0, 1].
BOUNDED_0_1 = tuple(m for m in METRICS if m != "unsupervised")
#: Metrics that do not depend on the latents' scales (IRS weights by scale; FactorVAE prunes
#: std < 0.05; BetaVAE's and SAP's regularised classifiers and W2 depend on scale).
SCALE_INVARIANT = ("mig", "dci", "modularity_explicitness")

#: Budgets per protocol: metric -> keyword arguments. "dlib" = the function defaults
#: (disentanglement_lib's unsupervised_study_v1 gin configs; IRS from config/sample/irs).
#: "fast": small budgets for progress reports during training (about a tenth of dlib's; the
#: values are noisier and MIG/MI scores carry a larger plug-in bias). "mipet": the paper
#: code's protocol (spec/mipet.md section 4), see :func:`evaluate`.
PROTOCOLS: dict[str, dict[str, dict[str, Any]]] = {
    "dlib": {name: {} for name in METRICS},
    "fast": {
        "beta_vae": {"batch_size": 16, "num_train": 500, "num_eval": 250},
        "factor_vae": {
            "batch_size": 32,
            "num_train": 500,
            "num_eval": 250,
            "num_variance_estimate": 2000,
        },
        "mig": {"num_train": 2000, "batch_size": 250},
        "dci": {"num_train": 500, "num_test": 250, "batch_size": 250, "n_estimators": 20},
        "sap": {"num_train": 500, "num_test": 250, "batch_size": 250},
        "irs": {"num_train": 2000, "batch_size": 250},
        "modularity_explicitness": {"num_train": 500, "num_test": 250, "batch_size": 250},
        "unsupervised": {"num_train": 2000, "batch_size": 250},
    },
    "mipet": {
        "factor_vae": {
            "batch_size": 100,
            "num_train": 800,
            "num_eval": 0,
            "num_variance_estimate": 100,
            "prune_threshold": 0.0,
        },
        # SAP, DCI and MIG share the paper's sample: 10,000 points drawn in batches of 100
        # with the metric seed; the "test" set is drawn again with the same seed, so it is the
        # first 5,000 training points (the paper's leakage, kept for comparable numbers).
        "sap": {"num_train": 10000, "num_test": 5000, "batch_size": 100},
        "dci": {"num_train": 10000, "num_test": 5000, "batch_size": 100},
        "mig": {"num_train": 10000, "batch_size": 100},
    },
}

#: Default metric set of each protocol (in evaluation order).
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "dlib": tuple(METRICS),
    "fast": ("factor_vae", "mig", "dci", "sap", "modularity_explicitness"),
    "mipet": ("factor_vae", "sap", "dci", "mig"),
}


def _unknown(kind: str, name: Any, known: Sequence[str]) -> AnalysisError:
    near = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return AnalysisError(f"Unknown {kind} '{name}'.{hint} Known: {', '.join(known)}.")


def _budgets(protocol: str, names: Sequence[str], overrides: Mapping[str, Any]) -> dict:
    for key, value in overrides.items():
        if key not in METRICS:
            raise _unknown("metric in the budget overrides", key, list(METRICS))
        if not isinstance(value, Mapping):
            raise AnalysisError(
                f"evaluate: override {key}= must be a dict of keyword arguments, e.g. "
                f"{key}={{'num_train': 1000}}; got {value!r}."
            )
    return {n: {**PROTOCOLS[protocol].get(n, {}), **dict(overrides.get(n, {}))} for n in names}


def _run_mipet(
    data: Any, represent: Represent, names: Sequence[str], seed: int, budgets: dict
) -> dict[str, float]:
    out: dict[str, float] = {}

    def shared(num: int, batch_size: int, where: str) -> tuple[np.ndarray, np.ndarray]:
        return sample_codes(data, represent, num, np.random.RandomState(seed), batch_size, where)

    for name in names:
        b = dict(budgets[name])
        if name == "factor_vae":
            out.update(factor_vae(data, represent, np.random.RandomState(seed), **b))
        elif name == "mig":
            codes, factors = shared(b.pop("num_train"), b.pop("batch_size"), "mig")
            out["mig"] = mig_from_codes(codes, factors, **b)
        elif name in ("sap", "dci"):
            x, y = shared(b.pop("num_train"), b["batch_size"], name)
            xt, yt = shared(b.pop("num_test"), b.pop("batch_size"), name)
            if name == "sap":
                out["sap"] = sap_from_codes(x, y, xt, yt, **b)
            else:
                out.update(dci_from_codes(x, y, xt, yt, seed=seed, **b))
        else:
            raise AnalysisError(
                f"evaluate(protocol='mipet'): the paper's protocol has no '{name}'; choose from "
                f"{list(DEFAULT_METRICS['mipet'])} or use protocol='dlib'."
            )
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
        ``"mipet"``: the paper code's evaluation (spec/mipet.md section 4) in its order
        FactorVAE, SAP, DCI, MIG: FactorVAE with 100-image batches, a 100-image variance
        estimate, threshold 0, 800 votes and the training accuracy as score, its votes drawn
        from ``RandomState(seed)`` (the paper re-seeds from the clock: fixed here). SAP, DCI
        and MIG on 10,000 points drawn in batches of 100 from ``RandomState(seed)``, the test
        set being the first 5,000 of them (as the paper). Use it with sampled codes
        (:func:`evaluate_encoder` with ``sample=True``, its default for this protocol).

    Args:
        data: ground-truth data (dlib interface).
        represent: observations (N, H, W, C) float32 -> codes (N, num_codes).
        metrics: metric names (keys of ``METRICS``); None: the protocol's default set.
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
        AnalysisError: unknown protocol/metric/override, bad budgets, non-finite codes.
    """
    if protocol not in PROTOCOLS:
        raise _unknown("protocol", protocol, list(PROTOCOLS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise AnalysisError(f"evaluate: seed must be an integer, got {seed!r}.")
    names = list(DEFAULT_METRICS[protocol] if metrics is None else metrics)
    if isinstance(metrics, str):
        names = [metrics]
    for name in names:
        if name not in METRICS:
            raise _unknown("metric", name, list(METRICS))
    budgets = _budgets(protocol, names, overrides)
    if protocol == "mipet":
        return _run_mipet(data, represent, names, int(seed), budgets)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise AnalysisError(f"evaluate: n_jobs must be an integer >= 1, got {n_jobs!r}.")

    def one(name: str) -> dict[str, float]:
        start = time.perf_counter()
        result = METRICS[name](data, represent, np.random.RandomState(int(seed)), **budgets[name])
        log.debug("%s took %.2f s", name, time.perf_counter() - start)
        return result

    if n_jobs == 1 or len(names) == 1:
        results = [one(name) for name in names]
    else:
        # Longest first (DCI, BetaVAE), so the pool is not left waiting on them at the end.
        slow = sorted(names, key=lambda n: ("dci", "beta_vae", "factor_vae").index(n)
                      if n in ("dci", "beta_vae", "factor_vae") else 3)
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            futures = {name: pool.submit(one, name) for name in slow}
            results = [futures[name].result() for name in names]
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
