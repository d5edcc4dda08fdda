"""Building a dataset cache from every kind of caller: the workers never re-run `__main__`.

Each entry point runs in its own interpreter with a fresh cache folder, on a dSprites cut to
11520 images (three tasks of 4096 rows, so the worker processes are used): seconds each.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models.errors import DataFileError
from tune.data import _build, _cache, _dsprites, _registry

ROOT = Path(__file__).resolve().parents[1]
SIZES = (3, 6, 40, 4, 4)  # 11520 images, 3 tasks of 4096 rows

# No `if __name__ == "__main__":` guard, like a user's first script; it notes every run of itself.
SCRIPT = textwrap.dedent(f"""\
    import os
    from tune.data import _registry, load_dataset
    with open(os.environ["RUNS_FILE"], "a") as fh:
        fh.write(f"{{os.getpid()}}\\n")
    _registry.REGISTRY["dsprites"] = _registry.REGISTRY["dsprites"].with_sizes({SIZES!r})
    data = load_dataset("dsprites")
    print("built", len(data), data.checksum)
    """)


def _run(argv: list[str], tmp_path: Path, stdin: str | None = None,
         cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "MIPET_TUNE_CACHE": str(tmp_path / "cache"), "RUNS_FILE": str(runs),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd or tmp_path)
    return done, runs.read_text().split() if runs.exists() else []


def _entry_point(kind: str, tmp_path: Path) -> tuple[list[str], str | None]:
    script = tmp_path / "build_it.py"
    script.write_text(SCRIPT)
    if kind == "script":
        return [sys.executable, str(script)], None
    if kind == "module":
        return [sys.executable, "-m", "build_it"], None
    if kind == "stdin":
        return [sys.executable, "-"], SCRIPT
    if kind == "-c":
        return [sys.executable, "-c", SCRIPT], None
    # a notebook: the code runs in a `__main__` module that has no file
    cell = ("import sys, types\nmain = types.ModuleType('__main__')\n"
            "sys.modules['__main__'] = main\n"
            f"exec(compile({SCRIPT!r}, '<cell 1>', 'exec'), main.__dict__)\n")
    return [sys.executable, "-c", cell], None


@pytest.mark.parametrize("kind", ["script", "module", "stdin", "-c", "notebook"])
def test_a_build_returns_from_any_main_module(kind: str, tmp_path: Path) -> None:
    argv, stdin = _entry_point(kind, tmp_path)
    done, runs = _run(argv, tmp_path, stdin)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("built 11520 "), done.stdout
    assert runs == [runs[0]], "the build workers ran the caller's main module again"
    assert list((tmp_path / "cache").glob("dsprites-gen-*.npy"))


def test_a_build_from_a_ray_worker(ray_session, tmp_path: Path) -> None:
    ray = ray_session

    @ray.remote(num_cpus=1)
    def build(cache: str) -> tuple[int, str]:
        from tune.data import _registry, load_dataset

        _registry.REGISTRY["dsprites"] = _registry.REGISTRY["dsprites"].with_sizes(SIZES)
        data = load_dataset("dsprites", cache_dir=cache)
        return len(data), data.checksum

    n, checksum = ray.get(build.remote(str(tmp_path / "cache")), timeout=120)
    assert n == 11520 and len(checksum) == 64
    # the same pixels as drawn here, in one process
    data = _load_small(tmp_path / "cache")
    assert data.checksum == checksum


def _load_small(cache: Path):  # noqa: ANN202
    from tune.data import load_dataset

    saved = _registry.REGISTRY["dsprites"]
    _registry.REGISTRY["dsprites"] = saved.with_sizes(SIZES)
    try:
        return load_dataset("dsprites", cache_dir=cache)
    finally:
        _registry.REGISTRY["dsprites"] = saved


def test_worker_processes_draw_the_same_rows_as_one_process(tmp_path: Path) -> None:
    info = _dsprites.DSPRITES.with_sizes((3, 2, 4, 5, 5))  # 600 images
    arrays = []
    for workers in (1, 2):
        arr = np.lib.format.open_memmap(tmp_path / f"w{workers}.npy", mode="w+", dtype=np.uint8,
                                        shape=(600, 512))
        done: list[int] = []
        _build.fill_rows(arr, "tune.data._dsprites", "render_packed_rows", (info,), chunk=128,
                         progress=done.append, workers=workers)
        assert sum(done) == 600 and len(done) == 5
        arrays.append(np.array(arr))
    assert np.array_equal(arrays[0], arrays[1])
    assert np.array_equal(arrays[1], _dsprites.render_packed_rows(0, 600, info))


def test_a_failing_worker_stops_the_build_with_its_error(tmp_path: Path) -> None:
    arr = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8,
                                    shape=(600, 512))
    with pytest.raises(DataFileError, match=r"worker failed drawing rows \(\d+, \d+\): "
                                            r"AttributeError"):
        _build.fill_rows(arr, "tune.data._dsprites", "render_packed_rows", ("no info",),
                         chunk=128, workers=2)


def test_a_held_lock_times_out_naming_its_holder(tmp_path: Path) -> None:
    entry = _cache.Entry(tmp_path, "stem")
    with entry.locked():
        with pytest.raises(DataFileError) as err:
            with entry.locked(timeout_s=0.3):
                pass
    message = str(err.value)
    assert f"held by pid {os.getpid()} on host {socket.gethostname()} since " in message
    assert str(entry.lock_path) in message and "end that process" in message
    with entry.locked(timeout_s=0.3):  # free again once its holder let go
        pass


def test_a_child_never_waits_for_its_parents_build(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    entry = _cache.Entry(tmp_path, "stem")
    with entry.locked():
        monkeypatch.setattr(os, "getppid", os.getpid)  # as if the holder were our parent
        with pytest.raises(DataFileError, match="held by this process's parent"):
            with entry.locked(timeout_s=60):
                pass
