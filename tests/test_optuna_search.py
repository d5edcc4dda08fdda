"""SafeOptunaSearch, study storage and reconciliation, driven directly (no Ray instance).

The searcher is called the way Tune's controller calls it, so the restore crashes of
`ray.tune.search.optuna.OptunaSearch` (the two of tune/sweep/searcher.py's opening) are
reproduced in milliseconds; tests/test_optuna_search_restore.py does it with a killed driver.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from tune.errors import ConfigError
from tune.sweep.reconcile import outcomes_from_results, reconcile_study
from tune.sweep.searcher import SafeOptunaSearch
from tune.sweep.study import RAY_TRIAL_ID_ATTR, make_study_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(trial: optuna.Trial) -> dict:
    """Module-level define-by-run space with a conditional parameter (must pickle)."""
    kind = trial.suggest_categorical("model/name", ["a", "b"])
    trial.suggest_float("model/beta", 1.0, 16.0, log=True)
    if kind == "b":
        trial.suggest_int("model/k", 1, 5)
    return {"train/steps": 3}


def _searcher(cls: type, sweep: Path, **kw) -> OptunaSearch:
    storage, name = make_study_storage(sweep)
    return cls(space, metric="loss", mode="min", seed=0, storage=storage, study_name=name, **kw)


def _snapshot_then_diverge(cls: type, sweep: Path, ckpt: Path) -> None:
    """A first driver: 3 trials, a Tune snapshot, then work the snapshot never sees, then death."""
    s = _searcher(cls, sweep)
    for tid in ["t1", "t2", "t3"]:
        assert s.suggest(tid)["train"] == {"steps": 3}
    s.on_trial_result("t1", {"loss": 2.0, "training_iteration": 1})
    s.on_trial_complete("t3", {"loss": 1.5, "training_iteration": 3})
    s.save(str(ckpt))  # Tune's experiment snapshot (searcher-state-*.pkl)
    # After the snapshot, before the SIGKILL: t1 finishes, t4 is asked.
    s.on_trial_complete("t1", {"loss": 1.0, "training_iteration": 3})
    s.suggest("t4")


def _restored(cls: type, sweep: Path, ckpt: Path) -> OptunaSearch:
    s = _searcher(cls, sweep)
    s.restore(str(ckpt))
    return s


def test_plain_optuna_search_crashes_on_these_restores(tmp_path: Path) -> None:
    """The two crashes SafeOptunaSearch exists for; if Ray fixes them this test says so."""
    _snapshot_then_diverge(OptunaSearch, tmp_path, tmp_path / "searcher.pkl")
    s = _restored(OptunaSearch, tmp_path, tmp_path / "searcher.pkl")
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        s.on_trial_result("t1", {"loss": 1.0, "training_iteration": 2})  # resumed, finished in DB
    with pytest.raises(KeyError):
        s.on_trial_result("restarted", {"loss": 1.0, "training_iteration": 1})


def test_safe_search_survives_the_same_restores(tmp_path: Path) -> None:
    _snapshot_then_diverge(SafeOptunaSearch, tmp_path, tmp_path / "searcher.pkl")
    s = _restored(SafeOptunaSearch, tmp_path, tmp_path / "searcher.pkl")
    study = s._ot_study
    by_ray = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t for t in study.get_trials()}
    assert by_ray["t4"].state == TrialState.FAIL  # the orphan asked after the snapshot
    assert "lost with the driver" in by_ray["t4"].user_attrs["fail_reason"]
    assert by_ray["t1"].state == TrialState.COMPLETE and by_ray["t1"].value == 1.0
    # Tune resumes t1 and t2 from the snapshot; t1 is finished in the study already.
    s.on_trial_result("t1", {"loss": 1.1, "training_iteration": 2})
    s.on_trial_complete("t1", {"loss": 1.1, "training_iteration": 3})
    s.on_trial_result("restarted", {"loss": 1.0, "training_iteration": 1})
    s.on_trial_complete("restarted", {"loss": 1.0})
    s.on_trial_result("t2", {"training_iteration": 1})  # no metric in this result
    s.on_trial_result("t2", {"loss": 0.7, "training_iteration": 2})
    s.on_trial_complete("t2", {"loss": 0.5, "training_iteration": 3})
    s.suggest("t5")
    s.on_trial_complete("t5", {"loss": 0.9}, error=True)
    by_ray = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t for t in study.get_trials()}
    assert by_ray["t1"].value == 1.0  # the first (real) completion is kept
    assert by_ray["t2"].state == TrialState.COMPLETE and by_ray["t2"].value == 0.5
    assert by_ray["t2"].intermediate_values == {2: 0.7}
    assert by_ray["t5"].state == TrialState.FAIL  # errored: FAIL despite a value in the result
    assert [t.state for t in study.get_trials()].count(TrialState.RUNNING) == 0


def test_safe_search_pickles_by_reference(tmp_path: Path) -> None:
    s = _searcher(SafeOptunaSearch, tmp_path)
    data = pickle.dumps(s)
    assert b"tune.sweep.searcher" in data and b"SafeOptunaSearch" in data
    again = pickle.loads(data)
    assert again.suggest("x")["model"]["name"] in ("a", "b")


def test_make_study_storage_is_reused_by_a_resume(tmp_path: Path) -> None:
    first = make_study_storage(tmp_path / "sw")
    assert first.backend == "journal" and first.path.name == "optuna.journal"
    assert first.study_name.startswith("sw-") and len(first.study_name) == 11
    optuna.create_study(storage=first.storage, study_name=first.study_name).ask()
    again = make_study_storage(tmp_path / "sw")
    assert again.study_name == first.study_name
    assert len(optuna.load_study(study_name=again.study_name, storage=again.storage).trials) == 1
    other = make_study_storage(tmp_path / "other", backend="sqlite", name="exp")
    assert other.path.name == "optuna.db" and other.study_name.startswith("exp-")
    record = json.loads((tmp_path / "other" / "optuna_study.json").read_text())
    assert record == {"backend": "sqlite", "study_name": other.study_name}
    assert make_study_storage(tmp_path / "other").backend == "sqlite"


def test_make_study_storage_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local folder"):
        make_study_storage("s3://bucket/sweep")
    with pytest.raises(ConfigError, match="'journal' or 'sqlite'"):
        make_study_storage(tmp_path, backend="redis")
    make_study_storage(tmp_path / "j")
    with pytest.raises(ConfigError, match="uses the 'journal' backend"):
        make_study_storage(tmp_path / "j", backend="sqlite")


def test_reconcile_study_matches_the_trials_table(tmp_path: Path) -> None:
    s = _searcher(SafeOptunaSearch, tmp_path)
    storage, name = make_study_storage(tmp_path)
    configs = {tid: s.suggest(tid) for tid in ["ok", "err", "resumed", "orphan", "live"]}
    s.on_trial_complete("ok", {"loss": 3.0})
    s.on_trial_complete("err", error=True)
    s.on_trial_complete("resumed", error=True)  # errored, later resumed to the end by Tune
    # Before a resumed fit: only "live" will run again.
    before = reconcile_study(storage, name, None, keep_running=["live"])
    assert len(before.failed_orphans) == 1  # "orphan"
    study = optuna.load_study(study_name=name, storage=storage)
    states = {t.user_attrs[RAY_TRIAL_ID_ATTR]: t.state for t in study.trials}
    assert states["live"] == TrialState.RUNNING and states["orphan"] == TrialState.FAIL
    # After fit: "live" finished but its completion never reached Optuna; "restarted" is a
    # trial Tune restarted under a new id from the config of "err".
    outcomes = {
        "ok": (3.0, configs["ok"]),
        "err": (None, configs["err"]),
        "resumed": (2.0, configs["resumed"]),
        "live": (1.0, configs["live"]),
        "restarted": (4.0, {**configs["err"]}),
    }
    after = reconcile_study(storage, name, outcomes)
    assert set(after.added) == {"resumed", "restarted"} and not after.unmatched
    study = optuna.load_study(study_name=name, storage=storage)
    newest = {}
    for t in study.trials:
        newest[t.user_attrs[RAY_TRIAL_ID_ATTR]] = t
    assert {k: (t.state.name, t.value) for k, t in newest.items()} == {
        "ok": ("COMPLETE", 3.0),
        "err": ("FAIL", None),
        "resumed": ("COMPLETE", 2.0),
        "orphan": ("FAIL", None),
        "live": ("COMPLETE", 1.0),
        "restarted": ("COMPLETE", 4.0),
    }
    assert newest["restarted"].params == newest["err"].params
    assert newest["restarted"].user_attrs["supersedes"] == newest["err"].number
    assert not any(t.state == TrialState.RUNNING for t in study.trials)
    assert not reconcile_study(storage, name, outcomes).changed  # idempotent


class _FakeResult:
    def __init__(self, trial_id: str, metrics: dict, config: dict, error=None) -> None:
        self.metrics = {"trial_id": trial_id, **metrics}
        self.config = config
        self.error = error


def test_outcomes_from_results() -> None:
    results = [
        _FakeResult("a", {"loss": 1.5, "mig": 0.2}, {"x": 1}),
        _FakeResult("b", {"loss": float("nan")}, {"x": 2}),
        _FakeResult("c", {"loss": 1.0}, {"x": 3}, error=RuntimeError("boom")),
        _FakeResult("d", {}, {"x": 4}),
    ]
    assert outcomes_from_results(results, "loss") == {
        "a": (1.5, {"x": 1}),
        "b": (None, {"x": 2}),
        "c": (None, {"x": 3}),
        "d": (None, {"x": 4}),
    }
    assert outcomes_from_results(results[:1], ["loss", "mig"])["a"][0] == [1.5, 0.2]


def test_mirror_mode_keeps_the_study_with_the_snapshot(tmp_path: Path) -> None:
    from tune.sweep import searcher as optuna_search

    study = make_study_storage(tmp_path / "sw")
    s = SafeOptunaSearch(
        space, metric="loss", mode="min", seed=0, study_name=study.study_name,
        mirror_path=study.path,
    )
    for tid in ["t1", "t2"]:
        s.suggest(tid)
    s.on_trial_complete("t1", {"loss": 1.0})
    s.save(str(tmp_path / "searcher.pkl"))  # a Tune snapshot also rewrites the journal
    s.suggest("t3")  # after the snapshot: neither the pickle nor the journal has it
    storage, name = make_study_storage(tmp_path / "sw")
    on_disk = optuna.load_study(study_name=name, storage=storage).trials
    assert [(t.user_attrs[RAY_TRIAL_ID_ATTR], t.state) for t in on_disk] == [
        ("t1", TrialState.COMPLETE),
        ("t2", TrialState.RUNNING),
    ]
    moved = tmp_path / "moved.journal"
    optuna_search.relocate_mirror(moved)
    try:
        r = SafeOptunaSearch(space, metric="loss", mode="min", seed=0, study_name=name)
        r.restore(str(tmp_path / "searcher.pkl"))
    finally:
        optuna_search.relocate_mirror(None)
    assert [t.user_attrs[RAY_TRIAL_ID_ATTR] for t in r._ot_study.trials] == ["t1", "t2"]
    r.on_trial_complete("t2", {"loss": 0.5})
    r.save(str(tmp_path / "searcher2.pkl"))
    from optuna.storages.journal import JournalFileBackend

    again = optuna.load_study(
        study_name=name, storage=optuna.storages.JournalStorage(JournalFileBackend(str(moved)))
    )
    assert [t.value for t in again.trials] == [1.0, 0.5]
    with pytest.raises(ConfigError, match="not both"):
        SafeOptunaSearch(space, metric="loss", mode="min", storage=storage, mirror_path=moved)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_sync_journal_appends_only_and_an_open_reader_follows(tmp_path: Path) -> None:
    """The mirror's journal grows by appends through a whole life: enqueued, asked, finished,
    restored from an older snapshot (the journal is then ahead), trials added by others."""
    from optuna.storages.journal import JournalFileBackend

    from tune.sweep.journal import sync_journal

    path = tmp_path / "optuna.journal"
    reader = optuna.storages.JournalStorage(JournalFileBackend(str(path)))  # open from the start
    study = optuna.create_study(study_name="s", direction="minimize")  # in memory, as mirrored
    study.set_metric_names(["loss"])
    before = b""

    def sync(source) -> dict:
        nonlocal before
        sync_journal(source, path)
        data = path.read_bytes()
        assert data.startswith(before)  # never rewritten
        before = data
        seen = optuna.load_study(study_name="s", storage=reader)
        return {t.user_attrs.get(RAY_TRIAL_ID_ATTR): t for t in seen.trials}

    study.enqueue_trial({"x": 0.5})
    assert [t.state for t in sync(study).values()] == [TrialState.WAITING]
    a = study.ask()
    a.suggest_float("x", 0.0, 1.0)
    a.set_user_attr(RAY_TRIAL_ID_ATTR, "a")
    a.report(1.0, 1)
    seen = sync(study)
    assert (seen["a"].state, seen["a"].params, seen["a"].intermediate_values) == (
        TrialState.RUNNING, {"x": 0.5}, {1: 1.0})
    snapshot = pickle.dumps(study)  # Tune's snapshot: "a" running
    study.tell(a, 0.3)
    b = study.ask()
    b.suggest_float("x", 0.0, 1.0)
    b.set_user_attr(RAY_TRIAL_ID_ATTR, "b")
    seen = sync(study)
    assert (seen["a"].state, seen["a"].value, seen["b"].state) == (
        TrialState.COMPLETE, 0.3, TrialState.RUNNING)
    size = path.stat().st_size
    sync(study)
    assert path.stat().st_size == size  # nothing changed, nothing appended

    # Someone else (reconcile_study) adds a trial; then the study comes back from the snapshot.
    other = optuna.load_study(study_name="s", storage=reader)
    other.add_trial(optuna.trial.create_trial(
        params={"x": 0.1}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        value=0.2, user_attrs={RAY_TRIAL_ID_ATTR: "r"}))
    restored = pickle.loads(snapshot)
    c = restored.ask()  # the in-memory id "b" had, for another Tune trial
    c.suggest_float("x", 0.0, 1.0)
    c.set_user_attr(RAY_TRIAL_ID_ATTR, "c")
    c.set_user_attr("eval/mig", 0.25)
    seen = sync(restored)
    assert {k: t.state for k, t in seen.items()} == {
        "a": TrialState.COMPLETE,  # finished in the journal: kept
        "b": TrialState.FAIL,  # the snapshot never held it
        "r": TrialState.COMPLETE,
        "c": TrialState.RUNNING,
    }
    assert "lost with the driver" in seen["b"].user_attrs["fail_reason"]
    assert seen["c"].user_attrs["eval/mig"] == 0.25
    assert optuna.load_study(study_name="s", storage=reader).metric_names == ["loss"]
