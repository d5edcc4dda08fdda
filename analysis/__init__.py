"""Disentanglement metrics and everything done with a finished sweep (numpy, scipy,
scikit-learn, pandas, pyarrow, matplotlib; no torch, ray or optuna).

    >>> from analysis import load_sweep, rank, ablation_table, export_best
    >>> df = load_sweep("runs/quick")                      # doctest: +SKIP
    >>> rank(df, by=["mig", "dci_disentanglement"])        # doctest: +SKIP

Every name is loaded on first use, so that `import analysis.errors` or
`analysis.metrics.registry` (what configs read) costs no pandas or scikit-learn.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from analysis.errors import AnalysisError

# Public name -> the module that defines it.
_LAZY = {
    "ablation_table": "analysis.ablation",
    "ablation_text": "analysis.ablation",
    "best_config": "analysis.export",
    "export_best": "analysis.export",
    "importance": "analysis.importance",
    "metric_correlation": "analysis.importance",
    "rank": "analysis.rank",
    "rank_table": "analysis.rank",
    "load_sweep": "analysis.sweep",
    "write_report": "analysis.report",
    "evaluate": "analysis.metrics",
    "evaluate_encoder": "analysis.metrics",
    "CachedRepresentation": "analysis.metrics",
}

__all__ = ["AnalysisError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`analysis.rank` and `analysis.importance` are the functions (as `from analysis import
    rank` gives); importing the submodule of the same name must not rebind them to it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
