"""`ConfirmWriter`: the Tune Callback that merges an ended confirmation run's row into
`confirm/trials.parquet` at once (as `TrialsWriter` does for a sweep), so that a finished pair
is in the folder before Tune counts it finished and a resume after a SIGKILL never runs it again.

It holds no state (the folder and the plan come from `tune.sweep.confirm.ACTIVE`). This module
imports Ray at the top; the confirmation imports it only when it builds a Tuner.
"""

from __future__ import annotations

from ray.tune import Callback


class ConfirmWriter(Callback):
    """Merge each ended trial's row (finished or errored) into the confirmation's table."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.confirm import record_pair

        record_pair(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.confirm import record_pair
        from tune.sweep.table import error_text

        record_pair(trial, error=error_text(trial))
