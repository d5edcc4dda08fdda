"""A damaged study journal is refused in one line, naming the file, the line and the byte offset
to cut at, before a resumed sweep does any work (no Ray needed)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import optuna
import pytest

from tune.errors import DataFileError
from tune.sweep.study import check_journal, check_study, make_study_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _journal_with_trials(folder: Path, n: int = 3) -> tuple[Path, str]:
    """A sweep folder whose study journal holds `n` finished trials; (journal path, study)."""
    study_storage = make_study_storage(folder, "j")
    study = optuna.create_study(study_name=study_storage.study_name,
                                storage=study_storage.storage)
    for i in range(n):
        trial = study.ask()
        trial.suggest_float("model/beta", 1.0, 16.0, log=True)
        study.tell(trial, float(i))
    return study_storage.path, study_storage.study_name


def _refusal(folder: Path) -> str:
    with pytest.raises(DataFileError) as caught:
        make_study_storage(folder)
    return str(caught.value)


@pytest.mark.parametrize(
    ("garbage", "problem"),
    [
        (b"\x80\xff\xfe\x00binary\n\x13\x37", "is not UTF-8 text"),
        (b"\x89PNG\r\n\x1a\n", "is not UTF-8 text"),
        (b'{"op_code": 5, "worker_id": "w", "trial_id"', "is not ended by a newline"),
        (b"not json at all\n", "is not a JSON record"),
        (b"[1, 2, 3]\n", "not an Optuna journal record"),
    ],
)
def test_a_damaged_journal_is_one_line_with_the_offset_to_cut_at(
    tmp_path: Path, garbage: bytes, problem: str
) -> None:
    path, name = _journal_with_trials(tmp_path)
    good = path.read_bytes()
    lines = good.count(b"\n")
    path.write_bytes(good + garbage)

    message = _refusal(tmp_path)
    assert "\n" not in message
    assert str(path) in message and problem in message
    assert f"line {lines + 1} (from byte {len(good)})" in message
    assert f"truncate -s {len(good)} {path}" in message
    with pytest.raises(DataFileError):
        check_study(tmp_path)  # what `sweep --resume` calls before Ray starts

    # Following the advice gives back the study as it was before the damage.
    offset = int(re.search(r"truncate -s (\d+)", message).group(1))
    with open(path, "r+b") as fh:
        fh.truncate(offset)
    study = optuna.load_study(study_name=name, storage=make_study_storage(tmp_path).storage)
    assert [t.value for t in study.trials] == [0.0, 1.0, 2.0]


def test_damage_in_the_middle_is_found_at_its_line(tmp_path: Path) -> None:
    path, _ = _journal_with_trials(tmp_path, n=2)
    lines = path.read_bytes().splitlines(keepends=True)
    broken = lines[:2] + [b"\xc3\x28garbage\n"] + lines[2:]
    path.write_bytes(b"".join(broken))
    message = _refusal(tmp_path)
    assert f"line 3 (from byte {len(lines[0]) + len(lines[1])})" in message
    assert "the 2 line(s) before it are intact" in message


def test_optuna_itself_fails_with_a_traceback_on_the_same_file(tmp_path: Path) -> None:
    """Why the check exists: Optuna's reader does not say which file or where."""
    from optuna.storages.journal import JournalFileBackend

    path, _ = _journal_with_trials(tmp_path)
    path.write_bytes(path.read_bytes() + b"\x80\xff\xfe\n")
    with pytest.raises(UnicodeDecodeError):
        optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def test_a_sound_missing_or_empty_journal_passes(tmp_path: Path) -> None:
    check_study(tmp_path / "nothing here")  # creates nothing
    assert not (tmp_path / "nothing here").exists()
    empty = tmp_path / "empty.journal"
    empty.write_bytes(b"")
    check_journal(empty)
    path, _ = _journal_with_trials(tmp_path / "sw")
    check_journal(path)
    check_study(tmp_path / "sw")


def _new_folder(driver, spec, base, space) -> Path:
    """A new sweep folder as the driver makes it (marker, sweep.yaml), its lock released."""
    with contextlib.ExitStack() as stack:
        folder, _ = driver._new_sweep_folder(spec, base, space, stack)
    return folder


def test_sweep_resume_refuses_a_damaged_journal_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_sweep import _spec as tiny_sweep_spec  # the tiny sweep of tests/test_sweep.py

    from tune.sweep import driver

    spec = tiny_sweep_spec(tmp_path)
    base, space = driver.prepare(spec)
    folder = _new_folder(driver, spec, base, space)
    path, _ = _journal_with_trials(folder)
    path.write_bytes(path.read_bytes() + b"\x80\xff\xfe\n")

    def no_work(*args, **kwargs):
        raise AssertionError("the sweep started work (Ray, the data) on a damaged journal")

    monkeypatch.setattr(driver, "_start_cluster", no_work)
    monkeypatch.setattr(driver, "_fit", no_work)
    with pytest.raises(DataFileError, match=r"damaged Optuna journal: line \d+ \(from byte"):
        driver.run_sweep(resume=folder)

    from tune.cli.commands import main

    assert main(["sweep", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mipet-tune sweep: error: ") and "\n" not in err
    assert f"{path}: damaged Optuna journal" in err and "Traceback" not in err


def test_sweep_resume_with_a_sound_journal_goes_on_to_start_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_sweep import _spec as tiny_sweep_spec

    from tune.sweep import driver

    spec = tiny_sweep_spec(tmp_path)
    base, space = driver.prepare(spec)
    folder = _new_folder(driver, spec, base, space)
    _journal_with_trials(folder)

    class Started(Exception):
        pass

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(driver, "_start_cluster", started)
    with pytest.raises(Started):
        driver.run_sweep(resume=folder)
