"""A driver SIGKILLed mid-sweep, then `Tuner.restore` with SafeOptunaSearch: all trials once.

Real Ray, trivial trainable (no torch). Both drivers run as subprocesses of this test (this
file, run as a script) with their own local Ray instance, so the test session's instance is not
involved. Every process the drivers started is recorded while they run and killed by pid at the
end (Ray's agents survive a SIGKILLed driver).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NUM_SAMPLES = 6
ITERS = 3
STEP_S = 0.3
FLAKY_X = -4.5


def space(trial) -> dict:
    trial.suggest_float("x", -5.0, 5.0)
    return {"iters": ITERS}


def trainable(config: dict, work: str) -> None:
    from ray import tune as ray_tune

    start = 0
    ckpt = ray_tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            start = json.loads(Path(folder, "state.json").read_text())["it"]
    x = config["x"]
    for it in range(start, config["iters"]):
        time.sleep(STEP_S)
        flag = Path(work, "flaky_raised")
        if x == FLAKY_X and it == 1 and not flag.exists():
            flag.write_text("1")
            raise RuntimeError("flaky trial fails once")
        loss = (x - 1.0) ** 2 + 1.0 / (it + 1)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "state.json").write_text(json.dumps({"it": it + 1}))
            ray_tune.report(
                {"loss": loss, "it": it + 1},
                checkpoint=ray_tune.Checkpoint.from_directory(folder),
            )
    with open(Path(work, "done.txt"), "a") as fh:
        fh.write(ray_tune.get_context().get_trial_id() + "\n")


def _driver(mode: str, work: str) -> None:
    """Run (mode "run") or resume (mode "restore") the sweep in `work`; write summary.json."""
    import logging

    from ray import tune as ray_tune

    from tune.sweep.connect import connect
    from tune.sweep.reconcile import outcomes_from_results, reconcile_study
    from tune.sweep.searcher import SafeOptunaSearch
    from tune.sweep.study import make_study_storage

    logging.basicConfig(level=logging.WARNING)
    connect(None, num_cpus=2, object_store_memory=80_000_000)
    fn = ray_tune.with_parameters(trainable, work=work)
    path = str(Path(work, "ray", "exp"))
    if mode == "run":
        study = make_study_storage(work)
        searcher = SafeOptunaSearch(
            space,
            metric="loss",
            mode="min",
            seed=0,
            study_name=study.study_name,
            mirror_path=study.path,
            points_to_evaluate=[{"x": FLAKY_X}],
        )
        tuner = ray_tune.Tuner(
            fn,
            tune_config=ray_tune.TuneConfig(
                search_alg=searcher,
                metric="loss",
                mode="min",
                num_samples=NUM_SAMPLES,
                max_concurrent_trials=2,
                reuse_actors=True,
            ),
            run_config=ray_tune.RunConfig(
                name="exp",
                storage_path=str(Path(work, "ray")),
                failure_config=ray_tune.FailureConfig(max_failures=0),
                verbose=0,
            ),
        )
    else:
        tuner = ray_tune.Tuner.restore(path, trainable=fn, resume_errored=True)
    results = tuner.fit()
    storage, study_name = make_study_storage(work)  # reopen: the mirror replaced the file
    report = reconcile_study(storage, study_name, outcomes_from_results(results, "loss"))
    summary = {
        "trials": [
            {
                "id": r.metrics.get("trial_id"),
                "x": r.config.get("x"),
                "loss": r.metrics.get("loss"),
                "it": r.metrics.get("it"),
                "error": None if r.error is None else str(r.error)[:200],
            }
            for r in results
        ],
        "added": report.added,
        "failed_orphans": report.failed_orphans,
    }
    Path(work, f"summary_{mode}.json").write_text(json.dumps(summary))


# ------------------------------------------------------------------------------------ the test
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        TUNE_GLOBAL_CHECKPOINT_S="2",  # sparse snapshots: the study runs ahead of them
        TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
        RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS="0",
        PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        ),
    )
    return env


def test_driver_killed_then_restored_runs_every_trial_once(tmp_path: Path) -> None:
    import optuna
    from _processes import ProcessReaper
    from optuna.trial import TrialState
    from ray import tune as ray_tune

    from tune.sweep.study import RAY_TRIAL_ID_ATTR, make_study_storage

    work = str(tmp_path)
    exp = tmp_path / "ray" / "exp"
    done = tmp_path / "done.txt"
    cmd = [sys.executable, __file__]
    log1 = open(tmp_path / "run.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd + ["run", work], env=_env(), stdout=log1, stderr=log1)
    reaper = ProcessReaper(proc.pid)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            finished = set(done.read_text().split()) if done.exists() else set()
            if len(finished) >= 2 and ray_tune.Tuner.can_restore(str(exp)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        reaper.sample()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        stragglers = reaper.reap()
    t_kill = time.monotonic()
    assert proc.returncode == -signal.SIGKILL
    assert stragglers >= 1  # Ray's agents outlived the driver; now killed by pid
    assert ray_tune.Tuner.can_restore(str(exp))
    killed_at = set(done.read_text().split())

    log2 = open(tmp_path / "restore.log", "w")
    proc2 = subprocess.Popen(cmd + ["restore", work], env=_env(), stdout=log2, stderr=log2)
    with ProcessReaper(proc2.pid) as reaper2:
        try:
            proc2.wait(timeout=240)
        finally:
            if proc2.poll() is None:
                proc2.kill()
    assert proc2.returncode == 0, (tmp_path / "restore.log").read_text()[-4000:]
    print(f"run until kill {t_kill - t0:.1f} s, restore {time.monotonic() - t_kill:.1f} s")
    assert not [pid for pid, cmd in reaper.seen.items() | reaper2.seen.items() if _alive(pid, cmd)]

    summary = json.loads((tmp_path / "summary_restore.json").read_text())
    trials = summary["trials"]
    ids = [t["id"] for t in trials]
    assert len(trials) == NUM_SAMPLES and len(set(ids)) == NUM_SAMPLES
    assert len({t["x"] for t in trials}) == NUM_SAMPLES  # no configuration ran twice as 2 trials
    assert all(t["error"] is None and t["it"] == ITERS for t in trials), trials
    # A trial that started after Tune's last snapshot (<= TUNE_GLOBAL_CHECKPOINT_S before the
    # kill) is unknown to the restored run: Tune runs another trial in its place.
    lost = killed_at - set(ids)
    assert set(done.read_text().split()) == set(ids) | lost
    flaky = [t["id"] for t in trials if t["x"] == FLAKY_X]
    assert len(flaky) == 1  # the errored trial was resumed and finished
    # If the snapshot saw it ERROR, Optuna had it FAIL: reconcile_study recorded its value.
    assert set(summary["added"]) <= set(flaky)

    storage, study_name = make_study_storage(work)
    study = optuna.load_study(study_name=study_name, storage=storage)
    assert not [t.number for t in study.trials if t.state == TrialState.RUNNING]
    newest = {}
    for t in study.trials:
        newest[t.user_attrs.get(RAY_TRIAL_ID_ATTR)] = t
    for t in trials:
        record = newest[t["id"]]
        assert record.state == TrialState.COMPLETE, (t, record)
        assert abs(record.value - t["loss"]) < 1e-9, (t, record)
        assert record.params["x"] == t["x"]
    # The study was restored with Tune's snapshot: it holds exactly the Tune trials (plus the
    # FAIL record the errored trial's value supersedes); the lost trials never reach it.
    assert set(newest) == set(ids)
    assert len(study.trials) == NUM_SAMPLES + len(summary["added"])


def _alive(pid: int, cmd: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            now = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return False
    return now == cmd


if __name__ == "__main__":
    _driver(sys.argv[1], sys.argv[2])
