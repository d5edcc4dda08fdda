"""Disentanglement metrics and everything done with a finished sweep (numpy, scipy,
scikit-learn, pandas, pyarrow, matplotlib; no torch, ray or optuna).

    >>> from analysis import load_sweep, rank, ablation_table, export_best
    >>> df = load_sweep("runs/quick")                      # doctest: +SKIP
    >>> rank(df, by=["mig", "dci_disentanglement"])        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from analysis.ablation import ablation_table, ablation_text
from analysis.errors import AnalysisError
from analysis.export import best_config, export_best
from analysis.importance import importance, metric_correlation
from analysis.rank import rank, rank_table
from analysis.sweep import load_sweep

__all__ = [
    "AnalysisError",
    "ablation_table",
    "ablation_text",
    "best_config",
    "export_best",
    "importance",
    "load_sweep",
    "metric_correlation",
    "rank",
    "rank_table",
    "write_report",
    "evaluate",
    "evaluate_encoder",
    "CachedRepresentation",
    "METRICS",
    "PROTOCOLS",
    "RESULT_KEYS",
]

# Loaded on first use, to keep `import analysis` light: the report pulls in matplotlib and the
# metrics scikit-learn.
_LAZY = {
    "write_report": "analysis.report",
    "evaluate": "analysis.metrics",
    "evaluate_encoder": "analysis.metrics",
    "CachedRepresentation": "analysis.metrics",
    "METRICS": "analysis.metrics",
    "PROTOCOLS": "analysis.metrics",
    "RESULT_KEYS": "analysis.metrics",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
