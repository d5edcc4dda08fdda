"""Faults a sweep folder must survive, each run as a real process (`python -m tune sweep` in a
subprocess with its own Ray, in a new process group, signalled and killed by PID only): two
drivers, a stale lock, SIGKILL, SIGINT and SIGTERM of the driver, damaged Ray state, a folder
that is not a sweep, a sweep failing before its first trial. One interrupted sweep is shared by
the module; each destructive case works on a copy of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from _processes import ProcessReaper

from tune.sweep.folder import LOCK_FILE, MARKER_FILE, SweepFolderError, SweepLock, read_lock
from tune.sweep.table import INTERRUPTED, merge_trials, write_trials

pytestmark = pytest.mark.ray

N = 3  # trials of the shared sweep
SPEC = {
    "name": "tiny",
    "base": {
        "model": {"latent_dim": 4, "num_ipe": 1},
        "train": {"steps": 60, "batch_size": 16, "report_every": 10, "checkpoint_every": 10,
                  "images": False, "num_threads": 1},
        "eval": {"protocol": "none"},
    },
    "space": {"params": {"model/beta": {"low": 1.0, "high": 4.0, "log": True}}},
    "num_samples": N,
    "metric": ["train/loss"],
    "mode": ["min"],
    "resources": {"cpu": 1},
    "max_concurrent": 1,
    "sampler": {"kind": "random", "seed": 0},
    "max_failures": 0,
}


# ---- helpers -----------------------------------------------------------------------------------
def _config(tmp: Path, **over) -> Path:
    path = tmp / f"sweep-{len(list(tmp.glob('sweep-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **over}))
    return path


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-m", "tune", "sweep", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)


def _run(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    proc = _start(*args)
    with ProcessReaper(proc.pid):
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _wait(what, timeout: float = 240, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what.__doc__ or what}")


def _finished(folder: Path) -> int:
    path = folder / "trials.parquet"
    try:
        df = pd.read_parquet(path)
    except Exception:
        return 0
    return int((df["status"] == "TERMINATED").sum())


def _running_trial_checkpointed(folder: Path, since: float) -> bool:
    """A trial not yet in trials.parquet has a checkpoint written after `since`."""
    try:
        done = set(pd.read_parquet(folder / "trials.parquet").query(
            "status == 'TERMINATED'")["trial_id"])
    except Exception:
        done = set()
    for ck in (folder / "ray").glob("trial_*/checkpoint_*"):
        try:
            if ck.parent.name.removeprefix("trial_") not in done and ck.stat().st_mtime > since:
                return True
        except OSError:
            continue
    return False


def _signal_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> tuple:
    with ProcessReaper(proc.pid) as reaper:
        _wait(ready, timeout)
        reaper.sample()
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("mipet-tune")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime)
            for p in folder.rglob("*") if p.is_file()}


def _table(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "trials.parquet")


def _assert_complete(folder: Path, before: pd.DataFrame | None = None) -> pd.DataFrame:
    """Exactly N trials, one row each, all finished; no row of `before` lost."""
    df = _table(folder)
    assert len(df) == N and df["trial_id"].nunique() == N, df[["trial_id", "status"]]
    assert (df["status"] == "TERMINATED").all(), df[["trial_id", "status"]]
    if before is not None:
        assert set(before["trial_id"]) <= set(df["trial_id"])
    assert (folder / "report" / "best_config.yaml").is_file()
    assert sorted(_study_states(folder)) == ["COMPLETE"] * N  # the searcher saw each once
    return df


def _study_states(folder: Path) -> list[str]:
    import optuna

    from tune.sweep.study import make_study_storage

    storage, name = make_study_storage(folder)
    return [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]


# ---- the shared interrupted sweep --------------------------------------------------------------
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A sweep stopped by SIGINT while its second trial ran; a second driver started meanwhile
    into the same folder was refused. Returns (pristine copy, the live folder, what was seen)."""
    tmp = tmp_path_factory.mktemp("faults")
    cfg = _config(tmp)
    folder = tmp / "runs" / "tiny"
    first = _start("--config", str(cfg), "--out", str(tmp / "runs"))
    with ProcessReaper(first.pid) as reaper:
        _wait(lambda: (folder / MARKER_FILE).is_file() and read_lock(folder / LOCK_FILE), 120)
        before = _snapshot(folder)
        second = _run("--config", str(cfg), "--out", str(tmp / "runs"), timeout=120)
        seen = {"second": second, "first_pid": first.pid, "touched": before != {
            k: v for k, v in _snapshot(folder).items() if k in before}}
        _wait(lambda: _finished(folder) >= 1 and _running_trial_checkpointed(folder, 0))
        reaper.sample()
        os.kill(first.pid, signal.SIGINT)
        out, err = first.communicate(timeout=300)
    seen.update(rc=first.returncode, out=out, err=err)
    pristine = tmp / "pristine"
    shutil.copytree(folder, pristine)
    return pristine, folder, seen


def _copy(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tiny"
    shutil.copytree(pristine, dst)
    return dst


def test_a_second_driver_is_refused_in_one_line_and_touches_nothing(interrupted) -> None:
    _, folder, seen = interrupted
    second = seen["second"]
    assert second.returncode == 2, second.stderr[-3000:]
    line = _one_line(second.stderr)
    assert f"pid {seen['first_pid']} on {socket.gethostname()}" in line and "started" in line
    assert not seen["touched"]


def test_sigint_stops_gracefully_and_resume_completes(interrupted) -> None:
    pristine, folder, seen = interrupted
    assert seen["rc"] == 130, seen["err"][-3000:]
    assert f"interrupted: 1 of {N} trials finished" in seen["out"]
    assert not (pristine / "report" / "best_config.yaml").exists()
    df = _table(pristine)
    assert (df["status"] == "TERMINATED").sum() == 1
    assert (df["status"] == INTERRUPTED).sum() >= 1, df[["trial_id", "status"]]
    assert not (pristine / LOCK_FILE).exists()  # released on the way out
    done = _run("--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_complete(folder, before=df)


def test_sigterm_stops_gracefully_and_resume_completes(interrupted, tmp_path) -> None:
    folder = _copy(interrupted[0], tmp_path)  # a moved folder: Ray's pickles name the original
    original = interrupted[1] / "ray"
    theirs = sorted(p.name for p in original.glob("trial_*"))
    before = _table(folder)
    t0 = time.time()
    rc, out, err = _signal_when(_start("--resume", str(folder)),
                                lambda: _running_trial_checkpointed(folder, t0), signal.SIGTERM)
    assert rc == 143, err[-3000:]
    assert "interrupted:" in out and not (folder / "report" / "best_config.yaml").exists()
    mid = _table(folder)
    assert set(before["trial_id"]) <= set(mid["trial_id"])
    assert (mid["status"] == INTERRUPTED).any()
    done = _run("--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    df = _assert_complete(folder, before=mid)
    # Every trial of the copy lives in the copy; the original folder got nothing.
    assert df["checkpoint_path"].str.startswith(str(folder)).all(), df["checkpoint_path"]
    assert sorted(p.name for p in original.glob("trial_*")) == theirs


@pytest.mark.parametrize("damage", ["tuner.pkl deleted", "experiment state truncated"])
def test_damaged_ray_state_is_refused_in_one_line(interrupted, tmp_path, damage) -> None:
    folder = _copy(interrupted[0], tmp_path)
    if damage == "tuner.pkl deleted":
        (folder / "ray" / "tuner.pkl").unlink()
        word = "tuner.pkl"
    else:
        state = sorted((folder / "ray").glob("experiment_state-*.json"))[-1]
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
        word = state.name
    table = (folder / "trials.parquet").read_bytes()
    listing = sorted(_snapshot(folder))
    done = _run("--resume", str(folder), timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done.stderr)
    assert word in line and "damaged" in line and "1 finished" in line
    assert (folder / "trials.parquet").read_bytes() == table
    assert sorted(_snapshot(folder)) == listing


def test_kill_9_then_resume_keeps_every_finished_trial(tmp_path) -> None:
    cfg = _config(tmp_path, num_samples=2)
    folder = tmp_path / "runs" / "tiny"
    proc = _start("--config", str(cfg), "--out", str(tmp_path / "runs"))
    rc, _, _ = _signal_when(proc, lambda: _finished(folder) >= 1, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    # The finished trial's result reached the folder before the trial counted as finished.
    first = _table(folder)
    assert (first["status"] == "TERMINATED").sum() == 1 and first["train/loss"].notna().all()
    assert read_lock(folder / LOCK_FILE)["pid"] == proc.pid  # the dead driver's lock
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ranked = subprocess.run([sys.executable, "-m", "tune", "rank", str(folder)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert ranked.returncode == 0 and first["trial_id"].iloc[0] in ranked.stdout, ranked.stderr
    done = _run("--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "taking over a stale sweep lock" in done.stderr
    df = _table(folder)
    assert len(df) == 2 and df["trial_id"].nunique() == 2 and (df["status"] == "TERMINATED").all()
    assert set(first["trial_id"]) <= set(df["trial_id"])
    states = _study_states(folder)
    assert states.count("COMPLETE") == 2 and "RUNNING" not in states, states


def test_resume_refuses_a_folder_that_merely_holds_sweep_yaml(tmp_path) -> None:
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(SPEC))
    done = _run("--resume", str(tmp_path), timeout=120)
    assert done.returncode == 2
    assert "not a sweep folder" in _one_line(done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_a_sweep_failing_before_its_first_trial_leaves_no_folder(tmp_path) -> None:
    cfg = _config(tmp_path, resources={"cpu": 1, "gpu": 3})
    done = _run("--config", str(cfg), "--out", str(tmp_path / "runs"), timeout=200)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "gpu" in _one_line(done.stderr).lower()
    assert not (tmp_path / "runs" / "tiny").exists()


# ---- the lock and the table, in process ------------------------------------------------------
def _write_lock(folder: Path, **record) -> Path:
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"host": socket.gethostname(), "started": time.time(),
                                "token": "other", **record}))
    return path


def _proc_start(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_lock_refuses_a_live_holder_and_takes_over_dead_or_reused_pids(tmp_path, caplog) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _write_lock(tmp_path, pid=sleeper.pid, proc_start=_proc_start(sleeper.pid))
        with pytest.raises(SweepFolderError, match=f"pid {sleeper.pid} on "):
            SweepLock(tmp_path).acquire()
        # The same pid, but a process that started at another time: the pid was reused.
        _write_lock(tmp_path, pid=sleeper.pid, proc_start=_proc_start(sleeper.pid) - 1)
        with SweepLock(tmp_path) as lock:
            assert read_lock(tmp_path / LOCK_FILE)["token"] == lock.token
        assert "is now another process" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_lock(tmp_path, pid=sleeper.pid, proc_start=1)  # its driver is gone
    with SweepLock(tmp_path):
        with pytest.raises(SweepFolderError):  # one driver per folder, this process too
            SweepLock(tmp_path).acquire()
    assert "no longer runs" in caplog.text
    assert not (tmp_path / LOCK_FILE).exists()


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path) -> None:
    path = _write_lock(tmp_path, host="other-node", pid=1, proc_start=1)
    with pytest.raises(SweepFolderError, match="pid 1 on other-node"):
        SweepLock(tmp_path, stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(path, (old, old))
    with SweepLock(tmp_path, stale_after_s=60, heartbeat_s=0.05) as lock:
        time.sleep(0.3)  # the heartbeat keeps the lock fresh
        assert time.time() - path.stat().st_mtime < 1
        assert lock.owned()


def test_the_marker_not_a_file_name_makes_a_sweep_folder(tmp_path) -> None:
    from tune.sweep.folder import check_sweep_folder, is_sweep_folder

    (tmp_path / "sweep.yaml").write_text("name: x\n")
    assert not is_sweep_folder(tmp_path)
    with pytest.raises(SweepFolderError, match="not a sweep folder"):
        check_sweep_folder(tmp_path)
    # A sweep folder from before the marker: our sweep.yaml (with `resolved`) beside ray/.
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "x", "resolved": {
        "space": {}, "base": {}}}))
    assert not is_sweep_folder(tmp_path)
    (tmp_path / "ray").mkdir()
    assert is_sweep_folder(tmp_path)
    check_sweep_folder(tmp_path)
    (tmp_path / MARKER_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(SweepFolderError, match="newer"):
        check_sweep_folder(tmp_path)


def _rows(*specs) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": t, "seed": s, "status": st, "train/loss": v}
                         for t, s, st, v in specs])


def test_trials_table_only_gains_rows_and_a_crash_mid_write_keeps_the_old(tmp_path) -> None:
    old = _rows(("a", 0, "TERMINATED", 1.0), ("b", 0, INTERRUPTED, 5.0))
    new = _rows(("a", 0, INTERRUPTED, 9.0), ("b", 0, "TERMINATED", 2.0), ("c", 0, "TERMINATED", 3))
    merged = merge_trials(old, new).set_index("trial_id")
    assert merged["train/loss"].to_dict() == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert merge_trials(new, _rows(("a", 0, "PENDING", None))).shape[0] == 3
    write_trials(tmp_path, old)
    write_trials(tmp_path, _rows(("c", 0, "TERMINATED", 3.0)))  # fewer rows: merged, not lost
    assert sorted(_table(tmp_path)["trial_id"]) == ["a", "b", "c"]
    before = (tmp_path / "trials.parquet").read_bytes()

    class Broken(pd.DataFrame):
        def to_parquet(self, fh, **kw):
            fh.write(b"PAR1 half a table")
            raise OSError("disk full")

    import tune.sweep.table as table

    real = table.merge_trials
    table.merge_trials = lambda o, n: Broken(real(o, n))
    try:
        with pytest.raises(OSError, match="disk full"):
            write_trials(tmp_path, new)
    finally:
        table.merge_trials = real
    assert (tmp_path / "trials.parquet").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"]
