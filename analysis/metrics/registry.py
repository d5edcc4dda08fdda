"""The metric registry: one :class:`Metric` record per metric, and the tables derived from them.

A record holds everything the rest of the code asks about a metric: the function (named as
``"module:function"`` and imported on first use), the keys it returns and which way each is
better, its keyword arguments under every protocol, what it needs (ground-truth factors; one
model or a group of them) and its known properties (bounded, scale and latent-order
invariance). This module imports only the standard library and ``analysis.errors``, so configs
can check metric names and the trials table can orient columns without scikit-learn, scipy or
pandas.

Adding a metric is one new module with the function plus one ``Metric(...)`` entry in
:data:`BUILTIN` (docs/recipes/add_metric.md); :func:`register` adds one at run time. A record
that lacks a protocol's budgets or a key's direction fails when it is built, i.e. at import.

Protocols:
    ``dlib``: disentanglement_lib's study budgets (``{}`` = the function's defaults are dlib's).
    ``fast``: small budgets for progress reports during training (about a tenth of dlib's; the
    values are noisier and MI-based scores carry a larger plug-in bias).
    ``mipet``: the MIPET-VAEs paper code's evaluation. A metric with ``from_codes`` is scored
    on one shared sample drawn in the budget's batches from ``RandomState(seed)``; a budget with
    ``num_test`` draws its test set again from ``RandomState(seed)``, so it is the start of the
    training sample (the paper's leakage, kept for comparable numbers).
    A budget of ``None`` means "not run under this protocol" (asking for it is an error).
"""

from __future__ import annotations

import difflib
import importlib
import keyword
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from analysis.errors import AnalysisError

#: The evaluation protocols; every record gives budgets (or None) for each.
PROTOCOL_NAMES = ("dlib", "fast", "mipet")
#: "max": higher is better; "min": lower is better.
DIRECTIONS = ("max", "min")

__all__ = [
    "BOUNDED_0_1",
    "BUILTIN",
    "DEFAULT_METRICS",
    "DIRECTIONS",
    "GROUP_METRIC_KEYS",
    "LATENT_ORDER_INVARIANT",
    "METRICS",
    "METRIC_KEYS",
    "Metric",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "RESULT_KEYS",
    "SCALE_INVARIANT",
    "direction_of",
    "get",
    "register",
    "registered",
    "unregister",
]


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise AnalysisError(f"metric function {ref!r} cannot be loaded: {exc}") from exc


@dataclass(frozen=True, kw_only=True, eq=False)
class Metric:
    """One metric, all the rest of the code needs to know about it.

    Attributes:
        name: the metric's name in configs and ``evaluate(metrics=...)`` (an identifier).
        function: ``"module:function"``. A single-model metric is called as
            ``fn(data, represent, random_state, **budget) -> {key: float}``; a group metric
            (``group=True``) as ``fn(data, represent_fns, random_state, **budget)`` and returns
            at least ``model_scores`` (one float per model).
        keys: result key -> "max" or "min", in the order the function returns them. A key
            belongs to one metric only (it becomes the column ``eval/<key>``).
        budgets: protocol -> keyword arguments (``{}``: the function's defaults), or None when
            the metric is not run under that protocol. Every protocol must be named.
        needs_factors: whether it reads ground-truth factors (False: it works on any images).
        bounded: every key lies in [0, 1].
        scale_invariant: unchanged when a latent is rescaled.
        latent_order_invariant: unchanged (in distribution) when latents are permuted or have
            their signs flipped.
        reference: where the algorithm and the dlib budgets come from.
        group: scores a group of models of one configuration (at least ``min_models``).
        min_models: the fewest models a group metric needs.
        from_codes: ``"module:function"`` of the fixed-data core, for a protocol that scores a
            shared sample (``mipet``): ``fn(codes, factors[, test_codes, test_factors],
            **budget)`` returning a float (the single key) or ``{key: float}``.
        cost: relative run time; ``evaluate(n_jobs>1)`` starts the costliest first.
    """

    name: str
    function: str
    keys: Mapping[str, str]
    budgets: Mapping[str, Mapping[str, Any] | None]
    needs_factors: bool
    bounded: bool
    scale_invariant: bool
    latent_order_invariant: bool
    reference: str
    group: bool = False
    min_models: int = 1
    from_codes: str | None = None
    cost: int = 1
    _fn: list = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"Metric {self.name!r}"
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(
            self.name
        ):
            raise AnalysisError(f"Metric name must be a Python identifier, got {self.name!r}.")
        for ref_name in ("function", "from_codes"):
            ref = getattr(self, ref_name)
            if ref is None and ref_name == "from_codes":
                continue
            if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
                raise AnalysisError(
                    f"{where}: {ref_name} must be 'package.module:function', got {ref!r}."
                )
        if not isinstance(self.keys, Mapping) or not self.keys:
            raise AnalysisError(
                f"{where}: keys must map each result key to 'max' or 'min', got {self.keys!r}."
            )
        for key, way in self.keys.items():
            if way not in DIRECTIONS:
                raise AnalysisError(
                    f"{where}: key {key!r} has direction {way!r}; give 'max' (higher is "
                    "better) or 'min' (lower is better)."
                )
        if not isinstance(self.budgets, Mapping):
            raise AnalysisError(f"{where}: budgets must be a dict protocol -> kwargs or None.")
        missing = [p for p in PROTOCOL_NAMES if p not in self.budgets]
        extra = [p for p in self.budgets if p not in PROTOCOL_NAMES]
        if missing or extra:
            what = f"no budgets for protocol {missing[0]!r}" if missing else (
                f"unknown protocol {extra[0]!r}")
            raise AnalysisError(
                f"{where}: {what}; give budgets for each of {', '.join(PROTOCOL_NAMES)} "
                "({} = the function's defaults, None = not run under that protocol)."
            )
        for protocol, budget in self.budgets.items():
            if budget is not None and not isinstance(budget, Mapping):
                raise AnalysisError(
                    f"{where}: budgets[{protocol!r}] must be a dict of keyword arguments or "
                    f"None, got {budget!r}."
                )
        for flag in ("needs_factors", "bounded", "scale_invariant", "latent_order_invariant",
                     "group"):
            if not isinstance(getattr(self, flag), bool):
                raise AnalysisError(f"{where}: {flag} must be True or False.")
        if self.group and self.min_models < 2:
            raise AnalysisError(f"{where}: a group metric needs min_models >= 2.")
        if not self.group and self.min_models != 1:
            raise AnalysisError(f"{where}: a single-model metric has min_models = 1.")
        if self.group and self.budgets.get("mipet") is not None:
            raise AnalysisError(f"{where}: the mipet protocol has no group metrics; use None.")
        # Frozen copies, so a record cannot be changed behind the tables' back.
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "budgets", MappingProxyType({
            p: None if b is None else MappingProxyType(dict(b)) for p, b in self.budgets.items()
        }))

    @property
    def unsupervised(self) -> bool:
        """Whether it needs no labels (works on any images): ``not needs_factors``."""
        return not self.needs_factors

    def load(self) -> Callable[..., Any]:
        """The function (imported on first use)."""
        if not self._fn:
            self._fn.append(_resolve(self.function))
        return self._fn[0]

    def load_from_codes(self) -> Callable[..., Any] | None:
        """The fixed-data core, or None."""
        return None if self.from_codes is None else _resolve(self.from_codes)

    def budget(self, protocol: str) -> dict[str, Any]:
        """The keyword arguments under ``protocol``; AnalysisError if it is not run there."""
        if protocol not in PROTOCOL_NAMES:
            raise unknown("protocol", protocol, PROTOCOL_NAMES)
        budget = self.budgets[protocol]
        if budget is None:
            runs = [p for p in PROTOCOL_NAMES if self.budgets[p] is not None]
            raise AnalysisError(
                f"metric {self.name!r} is not run under protocol {protocol!r}; it runs under "
                f"{', '.join(runs) or 'none'}."
            )
        return dict(budget)


# ---- the records -----------------------------------------------------------------------------
_STUDY = "disentanglement_lib config/unsupervised_study_v1/metric_configs"
_FAST = {"num_train": 2000, "batch_size": 250}

#: The metrics shipped, in disentanglement_lib's order: one entry per metric.
BUILTIN: tuple[Metric, ...] = (
    Metric(name="beta_vae", function="analysis.metrics._beta_vae:beta_vae",
           keys={"beta_vae_train": "max", "beta_vae": "max"},
           budgets={"dlib": {}, "fast": {"batch_size": 16, "num_train": 500, "num_eval": 250},
                    "mipet": None},
           needs_factors=True, bounded=True, scale_invariant=False, latent_order_invariant=True,
           cost=3, reference=f"beta_vae.compute_beta_vae_sklearn; {_STUDY}/beta_vae_sklearn.gin"),
    Metric(name="factor_vae", function="analysis.metrics._factor_vae:factor_vae",
           keys={"factor_vae_train": "max", "factor_vae": "max"},
           budgets={"dlib": {},
                    "fast": {"batch_size": 32, "num_train": 500, "num_eval": 250,
                             "num_variance_estimate": 2000},
                    # The paper code: 100-image batches and variance estimate, threshold 0, 800
                    # votes, its training accuracy reported (num_eval 0).
                    "mipet": {"batch_size": 100, "num_train": 800, "num_eval": 0,
                              "num_variance_estimate": 100, "prune_threshold": 0.0}},
           needs_factors=True, bounded=True, scale_invariant=False, latent_order_invariant=True,
           cost=2, reference=f"factor_vae.compute_factor_vae; {_STUDY}/factor_vae_metric.gin"),
    Metric(name="mig", function="analysis.metrics._mig:mig",
           from_codes="analysis.metrics._mig:mig_from_codes", keys={"mig": "max"},
           budgets={"dlib": {}, "fast": dict(_FAST),
                    "mipet": {"num_train": 10000, "batch_size": 100}},
           needs_factors=True, bounded=True, scale_invariant=True, latent_order_invariant=True,
           reference=f"mig.compute_mig; {_STUDY}/mig.gin"),
    Metric(name="dci", function="analysis.metrics._dci:dci",
           from_codes="analysis.metrics._dci:dci_from_codes",
           keys={"dci_disentanglement": "max", "dci_completeness": "max",
                 "dci_informativeness_train": "max", "dci_informativeness_test": "max"},
           budgets={"dlib": {},
                    "fast": {"num_train": 500, "num_test": 250, "batch_size": 250,
                             "n_estimators": 20},
                    "mipet": {"num_train": 10000, "num_test": 5000, "batch_size": 100}},
           needs_factors=True, bounded=True, scale_invariant=True, latent_order_invariant=True,
           cost=4, reference=f"dci.compute_dci; {_STUDY}/dci.gin"),
    Metric(name="sap", function="analysis.metrics._sap:sap",
           from_codes="analysis.metrics._sap:sap_from_codes", keys={"sap": "max"},
           budgets={"dlib": {}, "fast": {"num_train": 500, "num_test": 250, "batch_size": 250},
                    "mipet": {"num_train": 10000, "num_test": 5000, "batch_size": 100}},
           needs_factors=True, bounded=True, scale_invariant=False, latent_order_invariant=True,
           reference=f"sap_score.compute_sap; {_STUDY}/sap_score.gin"),
    Metric(name="irs", function="analysis.metrics._irs:irs", keys={"irs": "max"},
           budgets={"dlib": {}, "fast": dict(_FAST), "mipet": None},
           needs_factors=True, bounded=True, scale_invariant=False, latent_order_invariant=True,
           reference="irs.compute_irs; disentanglement_lib config/sample/irs/irs.gin"),
    Metric(name="modularity_explicitness",
           function="analysis.metrics._modularity:modularity_explicitness",
           keys={"modularity": "max", "explicitness_train": "max", "explicitness_test": "max"},
           budgets={"dlib": {}, "fast": {"num_train": 500, "num_test": 250, "batch_size": 250},
                    "mipet": None},
           needs_factors=True, bounded=True, scale_invariant=True, latent_order_invariant=True,
           reference=("modularity_explicitness.compute_modularity_explicitness; "
                      f"{_STUDY}/modularity_explicitness.gin")),
    # Dependence between latents (0 = independent), so lower is better; not disentanglement
    # scores (noise and rotations of independent latents also sit at 0).
    Metric(name="unsupervised", function="analysis.metrics._unsupervised:unsupervised",
           keys={"gaussian_total_correlation": "min", "gaussian_wasserstein_correlation": "min",
                 "gaussian_wasserstein_correlation_norm": "min", "mutual_info_score": "min"},
           budgets={"dlib": {}, "fast": dict(_FAST), "mipet": None},
           needs_factors=False, bounded=False, scale_invariant=False, latent_order_invariant=True,
           reference=f"unsupervised_metrics.unsupervised_metrics; {_STUDY}/unsupervised.gin"),
    # UDR (Duan et al., ICLR 2020) over the models of one configuration. dlib's budgets are
    # its only UDR config, config/tests/methods/udr/udr.gin (batch_size=10,
    # num_data_points=1000, kl_filter_threshold=0.01); there is no study gin for UDR.
    # `udr_a2a`: the same score with every model of a finished sweep as the group (Duan et al.'s
    # all-to-all variant; a model's score is its median over all the others); the sweep layer
    # computes it after the sweep (`mipet-tune udr SWEEP`), never a trial.
    Metric(name="udr_lasso", function="analysis.metrics._udr:udr",
           keys={"udr_lasso": "max", "udr_a2a": "max"},
           budgets={"dlib": {"batch_size": 10, "num_data_points": 1000, "correlation": "lasso"},
                    "fast": {"batch_size": 100, "num_data_points": 500, "correlation": "lasso"},
                    "mipet": None},
           # Lasso coefficients of correlated latents may exceed 1, so the score may too.
           needs_factors=False, bounded=False, scale_invariant=True, latent_order_invariant=True,
           group=True, min_models=2, cost=2,
           reference=("udr.compute_udr_sklearn; disentanglement_lib "
                      "config/tests/methods/udr/udr.gin")),
    Metric(name="udr_spearman", function="analysis.metrics._udr:udr",
           keys={"udr_spearman": "max"},
           budgets={"dlib": {"batch_size": 10, "num_data_points": 1000,
                             "correlation": "spearman"},
                    "fast": {"batch_size": 100, "num_data_points": 500,
                             "correlation": "spearman"},
                    "mipet": None},
           needs_factors=False, bounded=True, scale_invariant=True, latent_order_invariant=True,
           group=True, min_models=2, cost=3,
           reference=("udr.compute_udr_sklearn; disentanglement_lib "
                      "config/tests/methods/udr/udr_spearman.gin")),
)

#: Each protocol's default set, in its evaluation order (a protocol's own choice: a new metric
#: joins none of them unless it is added here; ``evaluate(metrics=[...])`` names it).
_DEFAULTS: dict[str, tuple[str, ...]] = {
    "dlib": ("beta_vae", "factor_vae", "mig", "dci", "sap", "irs", "modularity_explicitness",
             "unsupervised"),
    "fast": ("factor_vae", "mig", "dci", "sap", "modularity_explicitness"),
    "mipet": ("factor_vae", "sap", "dci", "mig"),  # the paper code's order
}

_REGISTRY: dict[str, Metric] = {}


def unknown(kind: str, name: Any, known: Sequence[str]) -> AnalysisError:
    """An "unknown <kind>" error with the closest known name and the list."""
    near = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    return AnalysisError(f"Unknown {kind} '{name}'.{hint} Known: {', '.join(known)}.")


def register(metric: Metric, *, replace: bool = False) -> Metric:
    """Add a metric to the registry (every table below sees it at once).

    Args:
        metric: the record.
        replace: allow replacing a registered metric of the same name.
    Returns:
        ``metric``.
    Raises:
        AnalysisError: not a Metric; the name is taken; one of its keys belongs to another
            metric.
    """
    if not isinstance(metric, Metric):
        raise AnalysisError(f"register: expected a Metric record, got {type(metric).__name__}.")
    if metric.name in _REGISTRY and not replace:
        raise AnalysisError(
            f"register: metric {metric.name!r} is already registered; pick another name or "
            "pass replace=True."
        )
    for other in _REGISTRY.values():
        clash = set(other.keys) & set(metric.keys)
        if other.name != metric.name and clash:
            raise AnalysisError(
                f"register: metric {metric.name!r} returns key {sorted(clash)[0]!r}, which "
                f"metric {other.name!r} already returns; result keys must be unique."
            )
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> Metric:
    """Remove a metric added with :func:`register` (the built-in ones stay)."""
    if name in {m.name for m in BUILTIN}:
        raise AnalysisError(f"unregister: {name!r} is a built-in metric.")
    if name not in _REGISTRY:
        raise unknown("metric", name, list(_REGISTRY))
    return _REGISTRY.pop(name)


def get(name: str) -> Metric:
    """The record of a metric; AnalysisError (with the closest name) if unknown."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise unknown("metric", name, list(_REGISTRY)) from None


def registered() -> tuple[Metric, ...]:
    """Every record, in registration order."""
    return tuple(_REGISTRY.values())


def direction_of(key: str) -> str | None:
    """The direction of a result key ("max"/"min"), or None if no metric returns it."""
    for metric in _REGISTRY.values():
        if key in metric.keys:
            return metric.keys[key]
    return None


class _View(Mapping):
    """A read-only mapping recomputed from the registry on each use (so it sees
    :func:`register`)."""

    def __init__(self, build: Callable[[], dict]) -> None:
        self._build = build

    def __getitem__(self, key: Any) -> Any:
        return self._build()[key]

    def __iter__(self) -> Iterator:
        return iter(self._build())

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(self._build())


class _Names(Sequence):
    """A read-only tuple of metric names recomputed from the registry on each use."""

    def __init__(self, build: Callable[[], tuple[str, ...]]) -> None:
        self._build = build

    def __getitem__(self, i: Any) -> Any:
        return self._build()[i]

    def __len__(self) -> int:
        return len(self._build())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(self._build())


class _Functions(Mapping):
    """Single-model metric name -> function; a function is imported when it is looked up."""

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in _REGISTRY or _REGISTRY[name].group:
            raise KeyError(name)
        return _REGISTRY[name].load()

    def __iter__(self) -> Iterator[str]:
        return iter([m.name for m in _single()])

    def __len__(self) -> int:
        return len(_single())

    def __repr__(self) -> str:
        return f"<metric functions {list(self)}>"


def _single() -> list[Metric]:
    return [m for m in _REGISTRY.values() if not m.group]


# The tables below list the single-model metrics (what ``evaluate`` runs); group metrics are in
# GROUP_METRIC_KEYS. ``direction_of`` and ``get`` know both.
#: Metric name -> the keys of its result, in order.
METRIC_KEYS: Mapping[str, tuple[str, ...]] = _View(
    lambda: {m.name: tuple(m.keys) for m in _single()}
)
#: Group metric name (UDR) -> the keys of its result.
GROUP_METRIC_KEYS: Mapping[str, tuple[str, ...]] = _View(
    lambda: {m.name: tuple(m.keys) for m in _REGISTRY.values() if m.group}
)
#: Result key -> "max" (higher is better) or "min" (lower is better).
RESULT_KEYS: Mapping[str, str] = _View(
    lambda: {k: d for m in _single() for k, d in m.keys.items()}
)
#: Metric name -> function (imported on lookup), in disentanglement_lib's order.
METRICS: Mapping[str, Callable[..., Any]] = _Functions()
#: Protocol -> {metric: keyword arguments} for the metrics run under it.
PROTOCOLS: Mapping[str, dict[str, dict[str, Any]]] = _View(
    lambda: {
        p: {m.name: dict(m.budgets[p]) for m in _single() if m.budgets[p] is not None}
        for p in PROTOCOL_NAMES
    }
)
#: Protocol -> its default metric set, in evaluation order.
DEFAULT_METRICS: Mapping[str, tuple[str, ...]] = MappingProxyType(_DEFAULTS)
#: Metrics whose values all lie in [0, 1].
BOUNDED_0_1: Sequence[str] = _Names(lambda: tuple(m.name for m in _single() if m.bounded))
#: Metrics that give the same value (in distribution) when latents are permuted or flipped.
LATENT_ORDER_INVARIANT: Sequence[str] = _Names(
    lambda: tuple(m.name for m in _single() if m.latent_order_invariant)
)
#: Metrics that do not depend on the latents' scales (IRS weights by scale; FactorVAE prunes
#: std < 0.05; BetaVAE's and SAP's regularised classifiers and W2 depend on scale).
SCALE_INVARIANT: Sequence[str] = _Names(
    lambda: tuple(m.name for m in _single() if m.scale_invariant)
)

for _metric in BUILTIN:
    register(_metric)
for _protocol, _names in _DEFAULTS.items():
    for _name in _names:
        if get(_name).budgets[_protocol] is None or get(_name).group:
            raise AnalysisError(f"default set of {_protocol!r} names {_name!r}, not run there.")
