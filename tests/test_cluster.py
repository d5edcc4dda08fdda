"""tune.cluster: resource checks, storage resolution, process reaping (no Ray), and `connect`
reusing the test session's Ray instance."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _processes import ProcessReaper, kill_processes, process_tree

from tune.errors import ConfigError, ResourceError
from tune.sweep.connect import ClusterInfo, NodeInfo
from tune.sweep.resources import check_resources
from tune.sweep.storage import resolve_storage


def _cluster(*nodes: dict[str, float]) -> ClusterInfo:
    infos = tuple(
        NodeInfo(
            node_id=f"{i:02d}" + "ab" * 27, address=f"10.0.0.{i}", resources=r, is_head=i == 0
        )
        for i, r in enumerate(nodes)
    )
    return ClusterInfo(address="10.0.0.0:6379", started_here=False, nodes=infos)


CPU_ONLY = _cluster({"CPU": 2.0}, {"CPU": 2.0})
MIXED = _cluster({"CPU": 4.0, "GPU": 2.0}, {"CPU": 2.0})


def test_fractional_gpus_count_per_whole_gpu() -> None:
    assert check_resources({"cpu": 0.5, "gpu": 0.25}, None, MIXED) == 8
    assert check_resources({"cpu": 1, "gpu": 0.3}, None, MIXED) == 4  # 3 per GPU, CPU-bound
    assert check_resources({"CPU": 1}, None, MIXED) == 6  # summed over nodes
    assert check_resources({"cpu": 1, "gpu": 0}, 3, MIXED) == 3
    assert check_resources({"gpu": 2}, None, MIXED) == 1


def test_impossible_requests_fail_fast_naming_the_nodes() -> None:
    with pytest.raises(
        ResourceError, match=r"asks for CPU 1, GPU 0.25.*CPU 2, GPU 0.*no node has a GPU"
    ):
        check_resources({"cpu": 1, "gpu": 0.25}, 4, CPU_ONLY)
    with pytest.raises(ResourceError, match=r"asks for CPU 4.*node 00abab.*CPU 2, GPU 0"):
        check_resources({"cpu": 4}, None, CPU_ONLY)
    with pytest.raises(ResourceError, match=r"resources.gpu=1.5 is impossible.*fraction <= 1"):
        check_resources({"cpu": 1, "gpu": 1.5}, None, MIXED)
    with pytest.raises(ResourceError, match=r"asks for GPU 3"):
        check_resources({"gpu": 3}, None, MIXED)
    with pytest.raises(ResourceError, match=r"accel 1.*accel 0"):
        check_resources({"accel": 1}, None, MIXED)


def test_bad_request_values_are_config_errors() -> None:
    for bad in [-1, "two", float("nan"), True]:
        with pytest.raises(ConfigError, match="resources.cpu"):
            check_resources({"cpu": bad}, None, MIXED)


def test_low_concurrency_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tune.sweep.resources"):
        assert check_resources({"cpu": 2, "gpu": 0.5}, 8, MIXED) == 2
    assert "at most 2 trial(s) can run at once" in caplog.text
    assert "max_concurrent=8" in caplog.text


def test_resolve_storage_paths_and_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_storage("sweeps/a") == str(tmp_path / "sweeps" / "a")
    assert (tmp_path / "sweeps" / "a").is_dir()
    assert not list((tmp_path / "sweeps" / "a").iterdir())  # the write probe is gone
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_storage("~/runs") == str(tmp_path / "home" / "runs")
    for uri in ["s3://bucket/sweeps", "gs://b/x", "abfs://c@a.dfs.core.windows.net/p"]:
        assert resolve_storage(uri) == uri
    assert resolve_storage(f"file://{tmp_path}/f") == f"file://{tmp_path}/f"
    assert (tmp_path / "f").is_dir()


def test_resolve_storage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="empty"):
        resolve_storage("  ")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        resolve_storage(blocker)
    with pytest.raises(ResourceError, match=r"cannot be created: .*disk full or not writable"):
        resolve_storage(blocker / "sub")
    with pytest.raises(ResourceError, match=r"disk full: .* GB free, the sweep needs"):
        resolve_storage(tmp_path / "ok", min_free_bytes=10**18)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(ResourceError, match=r"^disk full: .*No space left"):
        resolve_storage(tmp_path / "full")

    def read_only(fd: int) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "fsync", read_only)
    with pytest.raises(ResourceError, match=r"^not writable: .*Read-only"):
        resolve_storage(tmp_path / "ro")
    assert not [p for p in (tmp_path / "ro").iterdir()]


def test_process_tree_and_reaper_kill_exactly_the_descendants() -> None:
    # A parent that starts a grandchild which outlives it (like Ray's agents).
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        with ProcessReaper(parent.pid, interval_s=0.1) as reaper:
            deadline = time.monotonic() + 30
            while not process_tree(parent.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            tree = reaper.sample()
            assert len(tree) == 1 and "time.sleep(60)" in next(iter(tree.values()))
            parent.kill()
            parent.wait()
            (orphan,) = tree
            assert os.path.exists(f"/proc/{orphan}")  # survived its parent
        assert reaper.killed == 1
        assert not os.path.exists(f"/proc/{orphan}") or _zombie(orphan)
        assert bystander.poll() is None  # not ours: untouched
        assert kill_processes({bystander.pid: "something else"}) == 0  # command line differs
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        if parent.poll() is None:
            parent.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


@pytest.mark.ray
def test_connect_reuses_the_running_instance(ray_session) -> None:
    from tune.sweep.connect import connect

    info = connect("192.0.2.1:1")  # already initialised: the address is not even tried
    assert not info.started_here
    assert len(info.nodes) == 1 and info.nodes[0].is_head
    assert info.total["CPU"] == 4 and info.total["GPU"] == 2
    assert check_resources({"cpu": 0.5, "gpu": 0.25}, 8, info) == 8
    with pytest.raises(ResourceError, match=r"asks for CPU 8.*CPU 4, GPU 2"):
        check_resources({"cpu": 8}, None, info)


def test_processes_matching_finds_the_marked_tree() -> None:
    from _processes import processes_matching

    marker = f"mipet-marker-{os.getpid()}"
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, marker])
    try:
        deadline = time.monotonic() + 30
        found: dict[int, str] = {}
        while len(found) < 2 and time.monotonic() < deadline:
            found = processes_matching(marker)
            time.sleep(0.1)
        assert proc.pid in found and len(found) == 2  # the marked one and its child
        assert kill_processes(found) == 2
        proc.wait(timeout=10)
        assert processes_matching(marker) == {}
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(ValueError):
        processes_matching("")
