"""Disentanglement metrics, as google-research/disentanglement_lib computes them, and faster.

One function per metric, ``(data, represent, random_state, *, budgets) -> dict[str, float]``:
``beta_vae``, ``factor_vae``, ``mig``, ``dci``, ``sap``, ``irs``, ``modularity_explicitness``,
``unsupervised``. ``evaluate`` runs a set under a protocol (``"dlib"``, ``"fast"``,
``"mipet"``); ``evaluate_encoder`` does the same through a :class:`CachedRepresentation` that
encodes each distinct image once. ``RESULT_KEYS`` gives each key's direction ("max"/"min").

Speed: each metric draws from ``random_state`` in dlib's batch sizes but hands ``represent``
large chunks; DCI fits its factors in parallel threads and, for mostly continuous codes, uses
a presorted numpy implementation of scikit-learn's gradient boosting (``engine="auto"``,
2.6-3.5x less CPU; ``engine="sklearn"`` runs ``GradientBoostingClassifier`` itself);
``evaluate(n_jobs=k)`` runs k metrics at once. ``benchmarks/metrics.py`` prints the figures.

Conventions (decided, tested):
* Codes are (N, num_codes), factors (N, num_factors) integer classes (dlib transposes both).
* A NaN or inf code raises :class:`analysis.errors.AnalysisError` (a ValueError) naming the
  count: a diverged model cannot be scored, and the trainer treats it as a failed trial.
* A factor that takes a single value in the sample is left out of MIG, DCI, SAP and
  modularity/explicitness (dlib: NaN or a crash), with a warning; if none varies: error.
* A constant latent: MI 0 (MIG, modularity), importance 0 (DCI), dropped (IRS, FactorVAE,
  Gaussian scores), standardised to 0 (explicitness).
* DCI's trees get seeds drawn from ``random_state`` after the samples (dlib leaves them to
  numpy's unseeded global RNG), so one seed gives one value.
* The unsupervised scores are lower-is-better (``RESULT_KEYS`` says "min"); all others are
  higher-is-better.
"""

from __future__ import annotations

from analysis.metrics._beta_vae import beta_vae
from analysis.metrics._dci import dci, dci_from_codes, dci_from_importance
from analysis.metrics._evaluate import (
    BOUNDED_0_1,
    DEFAULT_METRICS,
    LATENT_ORDER_INVARIANT,
    METRIC_KEYS,
    METRICS,
    PROTOCOLS,
    RESULT_KEYS,
    SCALE_INVARIANT,
    evaluate,
    evaluate_encoder,
)
from analysis.metrics._factor_vae import factor_vae
from analysis.metrics._irs import irs, irs_from_codes
from analysis.metrics._mig import mig, mig_from_codes
from analysis.metrics._modularity import (
    modularity_explicitness,
    modularity_explicitness_from_codes,
)
from analysis.metrics._sap import sap, sap_from_codes
from analysis.metrics._unsupervised import unsupervised, unsupervised_from_codes
from analysis.metrics.cache import CachedRepresentation

__all__ = [
    "BOUNDED_0_1",
    "CachedRepresentation",
    "DEFAULT_METRICS",
    "LATENT_ORDER_INVARIANT",
    "METRICS",
    "METRIC_KEYS",
    "PROTOCOLS",
    "RESULT_KEYS",
    "SCALE_INVARIANT",
    "beta_vae",
    "dci",
    "dci_from_codes",
    "dci_from_importance",
    "evaluate",
    "evaluate_encoder",
    "factor_vae",
    "irs",
    "irs_from_codes",
    "mig",
    "mig_from_codes",
    "modularity_explicitness",
    "modularity_explicitness_from_codes",
    "sap",
    "sap_from_codes",
    "unsupervised",
    "unsupervised_from_codes",
]
