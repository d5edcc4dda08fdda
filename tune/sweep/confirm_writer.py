"""`ConfirmWriter`: the Tune Callback that merges an ended confirmation run's row into
`confirm/trials.parquet` at once (as `TrialsWriter` does for a sweep), so that a finished pair
is in the folder before Tune counts it finished and a resume after a SIGKILL never runs it again.

A confirmation row is a trials-table row (`tune.sweep.table`) keyed by its pair: `trial_id` is
`<config_id>-s<seed>` (so the table's merge by (trial_id, seed) keeps one row per configuration
and seed), `config_id` the sweep's configuration, `run_config_id` the re-run's own (its protocol
and overrides differ) and `ray_trial_id` the Ray trial that ran it.

The callback holds no state: the folder and the plan's pairs come from `ACTIVE`, which
`tune.sweep.confirm` fills while its Tuner runs. This module imports Ray at the top; the
confirmation imports it only when it builds a Tuner.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)

# The running confirmation (this process): `folder` (confirm/), `lookup` ((run config hash,
# seed) -> pair) and the data `checksum`.
ACTIVE: dict[str, Any] = {}


class ConfirmWriter(Callback):
    """Merge each ended trial's row (finished or errored) into the confirmation's table."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        record_pair(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from tune.sweep.table import error_text

        record_pair(trial, error=error_text(trial))


def pair_rows(df, ray_configs: dict[str, dict[str, Any]], lookup: dict) -> Any:
    """The trials-table rows `df` (Ray trial ids) as the confirmation's rows (see the module
    docstring); `ray_configs` maps a Ray trial id to its config, which `lookup` maps to its
    pair. A row that matches no pair is left out, with a WARNING."""
    from analysis.trials import config_hash
    from tune.sweep.table import sorted_table

    keep = []
    for row in df.to_dict("records"):
        config = ray_configs.get(str(row["trial_id"]))
        pair = None
        if config is not None:
            pair = lookup.get((config_hash(config), int(config.get("seed", -1))))
        if pair is None:
            log.warning("Ray trial %s matches no pair of the confirmation plan; its row is "
                        "left out", row["trial_id"])
            continue
        row["run_config_id"] = row.get("config_id")
        row["ray_trial_id"] = row["trial_id"]
        row["trial_id"] = pair["key"]
        row["config_id"] = pair["config_id"]
        keep.append(row)
    return sorted_table(keep)


def record_pair(trial, *, error: str | None) -> None:
    """Merge an ended Ray trial's row into the running confirmation's trials.parquet."""
    folder = ACTIVE.get("folder")
    if folder is None:
        return
    from tune.sweep.table import ended_trial_rows, write_trials

    try:
        rows = ended_trial_rows(trial, error=error, checksum=ACTIVE.get("checksum"))
        df = pair_rows(rows, {str(trial.trial_id): dict(trial.config or {})}, ACTIVE["lookup"])
        write_trials(folder, df)
    except Exception as exc:  # never fail the confirmation over this early copy
        log.warning("trial %s: could not write its row to %s: %s", trial.trial_id,
                    Path(folder) / "trials.parquet", exc)
