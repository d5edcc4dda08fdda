"""The product's exceptions.

They live in `models` because every package except `analysis` may import `models`; `tune.errors`
re-exports them. `analysis` keeps its own `AnalysisError` (a `ValueError`) since it imports nothing
of ours; the CLI treats both as bad input (one line, exit 2).
"""

from __future__ import annotations


class MipetTuneError(Exception):
    """Base class: an error the user can act on, printed as one line by the CLI."""


class ConfigError(MipetTuneError, ValueError):
    """A configuration value, key, search space or sweep spec is invalid."""


class DataFileError(MipetTuneError, ValueError):
    """A dataset file or cache is missing, malformed or corrupt."""


class ResourceError(MipetTuneError):
    """A resource request cannot be met (CPUs, GPUs, disk, cluster)."""


class NonFiniteLossError(MipetTuneError, FloatingPointError):
    """A loss, input or gradient became NaN or infinite; the run must not go on."""
