"""`TrialsWriter`: the Tune Callback that writes an ended trial's rows into trials.parquet at
once, so that a finished trial is in the sweep folder before Tune counts it finished (Ray's own
experiment snapshot lags by up to its period, about 10 s, and a SIGKILL of the driver in that
window used to lose the trial's result).

It is pickled into `ray/tuner.pkl` and holds no state: the folder comes from the driver's
`tune.sweep.table.ACTIVE` (this process's running sweep), so a sweep folder that was moved
still gets its rows.
This module imports Ray at the top; the driver imports it only when it builds a Tuner.
"""

from __future__ import annotations

from ray.tune import Callback


class TrialsWriter(Callback):
    """Merge each ended trial's rows (finished or errored) into the sweep's trials.parquet."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.table import record_trial

        record_trial(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.table import error_text, record_trial

        record_trial(trial, error=error_text(trial))
