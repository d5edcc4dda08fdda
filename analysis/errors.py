"""Errors of the analysis package (which imports nothing else of ours)."""


class AnalysisError(ValueError):
    """Bad input to an analysis function: not a sweep, unknown metric, nothing finished..."""
