"""Cost of appending a searcher's in-memory study to the sweep's journal (`sync_journal`).

Prints, for a study of N finished trials (two params, five intermediate values, four `eval/*`
attributes each): the first sync into an empty journal, a sync with nothing new, a sync with one
new trial, and the journal's size. Every appended line is one lock and one fsync.

    python benchmarks/journal_sync.py              # 100 and 1000 trials
    python benchmarks/journal_sync.py 300
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

from tune.sweep.searcher import RAY_TRIAL_ID_ATTR, sync_journal


def _study(n: int) -> optuna.Study:
    study = optuna.create_study(study_name="bench", direction="maximize")
    study.set_metric_names(["eval/mig"])
    for i in range(n):
        trial = study.ask()
        trial.suggest_float("model/beta", 1.0, 16.0, log=True)
        trial.suggest_int("model/num_ipe", 1, 5)
        trial.set_user_attr(RAY_TRIAL_ID_ATTR, f"r{i}")
        for step in range(5):
            trial.report(1.0 / (step + 1), step)
        for key in ("mig", "sap", "dci_disentanglement", "factor_vae"):
            trial.set_user_attr(f"eval/{key}", 0.5)
        study.tell(trial, 0.5)
    return study


def measure(n: int) -> str:
    study = _study(n)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "optuna.journal"
        t0 = time.perf_counter()
        sync_journal(study, path)
        t1 = time.perf_counter()
        sync_journal(study, path)
        t2 = time.perf_counter()
        trial = study.ask()
        trial.suggest_float("model/beta", 1.0, 16.0, log=True)
        trial.set_user_attr(RAY_TRIAL_ID_ATTR, "new")
        sync_journal(study, path)
        t3 = time.perf_counter()
        size = path.stat().st_size
    return (f"{n} trials: first sync {t1 - t0:.3f} s, nothing new {1e3 * (t2 - t1):.1f} ms, "
            f"one new trial {1e3 * (t3 - t2):.1f} ms, journal {size / 1e3:.0f} kB")


def main(argv: list[str]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    for n in [int(a) for a in argv] or [100, 1000]:
        print(measure(n))


if __name__ == "__main__":
    main(sys.argv[1:])
