"""`TrialsWriter`: the Tune Callback that writes an ended trial's rows into trials.parquet at
once, so that a finished trial is in the sweep folder before Tune counts it finished (Ray's own
experiment snapshot lags by up to its period, about 10 s, and a SIGKILL of the driver in that
window used to lose the trial's result).

It is pickled into `ray/tuner.pkl` and holds no state: the folder comes from the driver's
`tune.sweep.table.ACTIVE` (this process's running sweep), so a sweep folder that was moved
still gets its rows.
It also slims the ended trial Tune keeps in memory for the rest of the sweep: Tune keeps
running statistics (max, min, mean, last, last-5 and last-10 means, and two deques) of every
number in a trial's results (its config's numbers included), about 60 KiB per trial with
30 numbers, and a JSON copy of them that it writes into every experiment snapshot. Once the
trial has ended only those of the sweep's objectives are kept (`ACTIVE["objectives"]`; every
`eval/*` one without it): nothing of the sweep reads the others, and they were most of the
driver's memory growth per trial (`benchmarks/scale.py`).
This module imports Ray at the top; the driver imports it only when it builds a Tuner.
"""

from __future__ import annotations

import logging

from ray.tune import Callback

log = logging.getLogger(__name__)


class TrialsWriter(Callback):
    """Merge each ended trial's rows (finished or errored) into the sweep's trials.parquet."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.table import record_trial

        record_trial(trial, error=None)
        slim_trial(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.table import error_text, record_trial

        record_trial(trial, error=error_text(trial))
        slim_trial(trial)


def slim_trial(trial, keep: tuple[str, ...] | None = None) -> int:
    """Drop an ended trial's running statistics of every number but the objectives (`keep`,
    default the active sweep's, or every `eval/*` one); returns how many it dropped. Its
    results (`last_result`) are kept whole."""
    from tune.sweep.table import ACTIVE

    keep = tuple(ACTIVE.get("objectives") or ()) if keep is None else keep
    try:
        meta = trial.run_metadata
        keys = [k for k in meta.metric_analysis
                if (k not in keep if keep else not str(k).startswith("eval/"))]
        for key in keys:
            meta.metric_analysis.pop(key, None)
            meta.metric_n_steps.pop(key, None)
        meta.invalidate_cache()
        return len(keys)
    except Exception as exc:  # Tune's internals moved: keep the trial as it is
        log.debug("could not slim trial %s: %s", getattr(trial, "trial_id", "?"), exc)
        return 0
