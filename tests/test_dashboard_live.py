"""optuna-dashboard follows a running sweep: the study journal is append-only.

One real tiny sweep (the session's Ray; the spec of tests/test_sweep.py, 4 trials of 4 steps)
runs while two followers watch its `optuna.journal` from the moment the file appears: a plain
Optuna `JournalStorage` reader refreshed every 50 ms, and (when `optuna_dashboard` is installed)
the dashboard's own WSGI app served on 127.0.0.1 and polled through its HTTP API. A journal
rewritten in place breaks both: Optuna's journal readers keep the byte offset of each line they
have read.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_sweep import _spec as tiny_sweep_spec  # the tiny sweep of tests/test_sweep.py

from tune.sweep.driver import run_sweep, sweep_folder

pytestmark = pytest.mark.ray

OBJECTIVE = "eval/mig"


class _Follower(threading.Thread):
    """Waits for the journal file, then runs `poll(state)` every `period` s until stopped.

    `setup(path)` builds the follower's reader once, when the file exists (as a dashboard started
    at the sweep's start would); `poll` returns (Tune trial id, finished?) for each trial it sees.
    Every exception of `poll` is recorded, never raised.
    """

    def __init__(self, path: Path, setup, poll, period: float, max_polls: int) -> None:
        super().__init__(daemon=True)
        self.path, self.setup, self.poll = path, setup, poll
        self.period, self.max_polls = period, max_polls
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.seen: list[int] = []  # trials seen at each successful poll
        self.finished_at: dict[str, float] = {}  # when a poll first saw each trial finished
        self.state: Any = None

    def run(self) -> None:
        while not self.path.exists() and not self.stop.wait(0.02):
            pass
        try:
            self.state = self.setup(self.path)
        except Exception as exc:  # pragma: no cover - reported by the test
            self.errors.append(f"setup: {exc!r}")
            return
        while not self.stop.is_set() and len(self.seen) < self.max_polls:
            try:
                trials = self.poll(self.state)
                self.seen.append(len(trials))
                for ray_id, finished in trials:
                    if finished:
                        self.finished_at.setdefault(ray_id, time.time())
            except Exception as exc:
                self.errors.append(repr(exc))
            self.stop.wait(self.period)


def _journal_reader(path: Path):
    import optuna

    return optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path)))


def _poll_reader(storage) -> list[tuple[str, bool]]:
    import optuna

    out = []
    for summary in storage.get_all_studies():  # what the dashboard does, the public way
        for trial in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
            out.append((trial.user_attrs.get("ray_trial_id"), trial.state.is_finished()))
    return out


def _serve_dashboard(path: Path):
    """optuna-dashboard's WSGI app on 127.0.0.1 (a free port), in a daemon thread."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    import optuna_dashboard

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = make_server("127.0.0.1", 0, optuna_dashboard.wsgi(_journal_reader(path)),
                         handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _get(server, route: str) -> Any:
    url = f"http://127.0.0.1:{server.server_port}{route}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, (route, response.status)
        return json.loads(response.read())


def _poll_dashboard(server) -> list[tuple[str, bool]]:
    out = []
    for study in _get(server, "/api/studies")["study_summaries"]:
        for trial in _get(server, f"/api/studies/{study['study_id']}")["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            out.append((attrs.get("ray_trial_id"), trial["state"] != "Running"))
    return out


@pytest.fixture(scope="module")
def live_sweep(ray_session, tmp_path_factory):
    """Run the sweep with both followers attached; hand over what they saw."""
    tmp_path = tmp_path_factory.mktemp("live")
    spec = tiny_sweep_spec(tmp_path, name="live", num_samples=4)
    assert list(spec.metric) == [OBJECTIVE]
    journal = Path(sweep_folder(spec)) / "optuna.journal"
    reader = _Follower(journal, _journal_reader, _poll_reader, 0.05, 100_000)
    followers = [reader]
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        dashboard = None
    else:  # a few bounded requests: one poll every 0.5 s
        dashboard = _Follower(journal, _serve_dashboard, _poll_dashboard, 0.5, 200)
        followers.append(dashboard)
    for follower in followers:
        follower.start()
    try:
        folder = run_sweep(spec, verbose=0, analyse=False).folder
        time.sleep(0.3)  # a last refresh or two after the end
    finally:
        for follower in followers:
            follower.stop.set()
            follower.join(timeout=30)
    _print_lag(folder, followers)
    yield {"folder": folder, "reader": reader, "dashboard": dashboard}
    if dashboard is not None and dashboard.state is not None:
        dashboard.state.shutdown()


def _print_lag(folder: Path, followers: list[_Follower]) -> None:
    """How long after a trial finished each follower first saw it finished (shown with -s)."""
    df = pd.read_parquet(folder / "trials.parquet")
    done = df.groupby("trial_id")["finished_at"].max()
    for name, follower in zip(("journal reader", "optuna-dashboard"), followers, strict=False):
        lags = [follower.finished_at[t] - done[t] for t in done.index if t in follower.finished_at]
        if lags:
            print(f"{name}: {len(follower.seen)} polls, saw {len(lags)}/{len(done)} trials "
                  f"finished {min(lags):.1f}-{max(lags):.1f} s after they finished")


def test_a_journal_reader_follows_the_sweep_from_start_to_end(live_sweep) -> None:
    import optuna
    from optuna.trial import TrialState

    reader = live_sweep["reader"]
    assert not reader.errors, reader.errors[:3]
    assert len(reader.seen) >= 10 and reader.seen[0] < 4 <= reader.seen[-1], reader.seen
    # The reader opened at the start, refreshed once more: every trial, complete.
    storage = reader.state
    (summary,) = storage.get_all_studies()
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert study.metric_names == [OBJECTIVE]
    df = pd.read_parquet(live_sweep["folder"] / "trials.parquet")
    assert len(df) == 4 and not df["failed"].any()
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_ray) == set(df["trial_id"]) and len(study.trials) == 4
    for _, row in df.iterrows():
        trial = by_ray[row["trial_id"]]
        assert trial.state == TrialState.COMPLETE
        assert trial.params["model/beta"] == pytest.approx(row["config/model/beta"])
        assert trial.value == pytest.approx(row[OBJECTIVE])
        evals = {k: v for k, v in trial.user_attrs.items() if k.startswith("eval/")}
        expected = {k: row[k] for k in df.columns if k.startswith("eval/")}
        assert evals == pytest.approx(expected) and OBJECTIVE in evals


def test_optuna_dashboard_serves_the_live_sweep(live_sweep) -> None:
    dashboard = live_sweep["dashboard"]
    if dashboard is None:
        pytest.skip("optuna_dashboard is not installed (pip install -e '.[dashboard]')")
    server = dashboard.state
    assert server is not None and not dashboard.errors, dashboard.errors[:3]
    assert len(dashboard.seen) >= 3 and dashboard.seen[0] < 4, dashboard.seen
    df = pd.read_parquet(live_sweep["folder"] / "trials.parquet")
    (study,) = _get(server, "/api/studies")["study_summaries"]
    deadline = time.monotonic() + 15  # the dashboard caches a study's trials for 2 s
    while True:
        detail = _get(server, f"/api/studies/{study['study_id']}")
        done = [t for t in detail["trials"] if t["state"] == "Complete"]
        if len(done) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(done) == 4, [t["state"] for t in detail["trials"]]
    assert detail["objective_names"] == [OBJECTIVE]
    expected = dict(zip(df["trial_id"], df[OBJECTIVE], strict=True))
    for trial in done:
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert [p["name"] for p in trial["params"]] == ["model/beta"]
        assert float(attrs[OBJECTIVE]) == pytest.approx(expected[attrs["ray_trial_id"]])
        assert trial["values"] == [pytest.approx(expected[attrs["ray_trial_id"]])]
