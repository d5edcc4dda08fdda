"""Disentanglement metrics, as google-research/disentanglement_lib computes them, and faster.

One function per metric, ``(data, represent, random_state, *, budgets) -> dict[str, float]``:
``beta_vae``, ``factor_vae``, ``mig``, ``dci``, ``sap``, ``irs``, ``modularity_explicitness``,
``unsupervised``. ``evaluate`` runs a set under a protocol (``"dlib"``, ``"fast"``,
``"mipet"``); ``evaluate_encoder`` does the same through a :class:`CachedRepresentation` that
encodes each distinct image once; ``evaluate_group`` runs a group metric (UDR: ``udr``,
``udr_from_codes``) over the models of one configuration. Every metric has one record in
:mod:`analysis.metrics.registry` (its keys and their directions, its budgets per protocol, what
it needs); ``RESULT_KEYS`` gives each key's direction ("max"/"min"). That module and the tables
imported from it here are light (no scikit-learn, scipy or pandas); the functions are imported
on first use.

Speed: each metric draws from ``random_state`` in dlib's batch sizes but hands ``represent``
large chunks; DCI fits its factors in parallel threads with a numpy implementation of
scikit-learn's gradient boosting (``engine="auto"``: features sorted once, and a histogram split
search over the values of codes with few distinct values, which finds the same splits;
``engine="sklearn"`` runs ``GradientBoostingClassifier`` itself);
``evaluate(n_jobs=k)`` runs k metrics at once. ``benchmarks/metrics.py`` prints the figures.

Conventions (decided, tested):
* Codes are (N, num_codes), factors (N, num_factors) integer classes (dlib transposes both).
* A NaN or inf code raises :class:`NonFiniteCodesError` (an ``AnalysisError``, a ValueError)
  naming the count: a diverged model cannot be scored, and the trainer treats it as a failed
  trial.
* A factor that takes a single value in the sample is left out of MIG, DCI, SAP and
  modularity/explicitness (dlib: NaN or a crash), with a warning; if none varies: error.
* A constant latent: MI 0 (MIG, modularity), importance 0 (DCI), dropped (IRS, FactorVAE,
  Gaussian scores), standardised to 0 (explicitness).
* DCI's trees get seeds drawn from ``random_state`` after the samples (dlib leaves them to
  numpy's unseeded global RNG), so one seed gives one value.
* The unsupervised scores are lower-is-better (``RESULT_KEYS`` says "min"); all others are
  higher-is-better. UDR needs no factors but at least two models.
"""

from __future__ import annotations

import importlib
from typing import Any

from analysis.metrics.registry import (
    BOUNDED_0_1,
    DEFAULT_METRICS,
    GROUP_METRIC_KEYS,
    LATENT_ORDER_INVARIANT,
    METRIC_KEYS,
    METRICS,
    PROTOCOL_NAMES,
    PROTOCOLS,
    RESULT_KEYS,
    SCALE_INVARIANT,
    Metric,
    direction_of,
    get,
    register,
    registered,
    unregister,
)

#: Public name -> the module that defines it, imported on first use (scikit-learn, scipy).
_LAZY = {
    "CachedRepresentation": "analysis.metrics.cache",
    "NonFiniteCodesError": "analysis.metrics._utils",
    "beta_vae": "analysis.metrics._beta_vae",
    "dci": "analysis.metrics._dci",
    "dci_from_codes": "analysis.metrics._dci",
    "dci_from_importance": "analysis.metrics._dci",
    "evaluate": "analysis.metrics._evaluate",
    "evaluate_encoder": "analysis.metrics._evaluate",
    "evaluate_group": "analysis.metrics._evaluate",
    "factor_vae": "analysis.metrics._factor_vae",
    "irs": "analysis.metrics._irs",
    "mig": "analysis.metrics._mig",
    "mig_from_codes": "analysis.metrics._mig",
    "modularity_explicitness": "analysis.metrics._modularity",
    "sap": "analysis.metrics._sap",
    "sap_from_codes": "analysis.metrics._sap",
    "udr": "analysis.metrics._udr",
    "udr_from_codes": "analysis.metrics._udr",
    "unsupervised": "analysis.metrics._unsupervised",
}

__all__ = [
    "BOUNDED_0_1",
    "CachedRepresentation",
    "DEFAULT_METRICS",
    "GROUP_METRIC_KEYS",
    "LATENT_ORDER_INVARIANT",
    "METRICS",
    "METRIC_KEYS",
    "Metric",
    "NonFiniteCodesError",
    "PROTOCOLS",
    "PROTOCOL_NAMES",
    "RESULT_KEYS",
    "SCALE_INVARIANT",
    "beta_vae",
    "dci",
    "dci_from_codes",
    "dci_from_importance",
    "direction_of",
    "evaluate",
    "evaluate_encoder",
    "evaluate_group",
    "factor_vae",
    "get",
    "irs",
    "mig",
    "mig_from_codes",
    "modularity_explicitness",
    "register",
    "registered",
    "sap",
    "sap_from_codes",
    "udr",
    "udr_from_codes",
    "unregister",
    "unsupervised",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in METRIC_KEYS or name in GROUP_METRIC_KEYS:  # any registered metric, by its name
        return get(name).load()
    raise AttributeError(f"module 'analysis.metrics' has no attribute {name!r}")
