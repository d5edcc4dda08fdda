"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`), in a subprocess.

The test session's own Ray instance cannot host a `Cluster`, so this file runs itself as a
script: head (no CPU for trials) + worker A (1 CPU, 1 logical GPU) + worker B (1 CPU). It checks
`connect` joining by address, `check_resources` per node, `prepare_per_node` on every node, and
a Tune run of two checkpointing trials, one per worker, where the node running the first trial
is removed mid-trial: the trial is retried on the other node from its last checkpoint. Every
process the script started is killed by pid at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ITERS = 6
STEP_S = 0.3


def fake_prepare(name, source=None, cache_dir=None, progress=False):
    """Stands in for tune.data.prepare_dataset on each node (module-level: sent to the nodes)."""
    return {"name": name, "checksum": f"sum-{name}", "cache": cache_dir}


def trainable(config: dict, work: str) -> None:
    import ray
    from ray import tune

    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            start = json.loads(Path(folder, "s.json").read_text())["it"]
    node = ray.get_runtime_context().get_node_id()
    name = config["name"]
    with open(Path(work, f"{name}.log"), "a") as fh:
        fh.write(json.dumps({"node": node, "start": start}) + "\n")
    for it in range(start, ITERS):
        time.sleep(STEP_S)
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "s.json").write_text(json.dumps({"it": it + 1}))
            tune.report({"it": it + 1, "node": node},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def _script(work: str) -> None:
    # Like `ray start --head` on Ray >= 2.59, the cluster checks a token (set before Ray is
    # imported: Ray caches its config). connect() must switch token mode on by itself.
    os.environ["RAY_AUTH_MODE"] = "token"
    import logging

    import ray
    from ray import tune
    from ray.cluster_utils import Cluster

    from tune.errors import DataFileError, ResourceError
    from tune.sweep.connect import connect
    from tune.sweep.nodes import prepare_per_node
    from tune.sweep.resources import check_resources

    logging.basicConfig(level=logging.WARNING)
    out: dict = {}
    store = {"object_store_memory": 80_000_000}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, **store},
    )
    node_a = cluster.add_node(num_cpus=1, num_gpus=1, **store)
    node_b = cluster.add_node(num_cpus=1, **store)
    cluster.wait_for_nodes()
    del os.environ["RAY_AUTH_MODE"]
    try:
        info = connect(cluster.address)
        out["auth_mode"] = os.environ.get("RAY_AUTH_MODE")
        out["started_here"] = info.started_here
        out["nodes"] = {n.node_id: n.resources for n in info.nodes}
        out["capacity_cpu"] = check_resources({"cpu": 1}, 4, info)
        out["capacity_gpu"] = check_resources({"cpu": 0.5, "gpu": 0.5}, None, info)
        try:
            check_resources({"cpu": 2}, None, info)
        except ResourceError as exc:
            out["too_big"] = str(exc)
        gpu_node = ray.get(
            ray.remote(lambda: ray.get_runtime_context().get_node_id())
            .options(num_cpus=0, num_gpus=0.5).remote()
        )
        out["gpu_task_node"] = gpu_node
        per_node = prepare_per_node("toy", None, "/tmp/cache", prepare_fn=fake_prepare)
        out["prepared"] = {k: v["checksum"] for k, v in per_node.items()}
        try:
            prepare_per_node("toy", None, None, prepare_fn=_odd_prepare(node_b.node_id))
        except DataFileError as exc:
            out["mismatch"] = str(exc)

        victim: dict = {}

        def remove_when_checkpointed() -> None:
            log = Path(work, "t0.log")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                trial_dirs = list(Path(work, "exp").glob("*/checkpoint_000001"))
                if log.exists() and trial_dirs and any("t0" in str(d) for d in trial_dirs):
                    first = json.loads(log.read_text().splitlines()[0])["node"]
                    node = node_a if node_a.node_id == first else node_b
                    victim["node"] = first
                    cluster.remove_node(node, allow_graceful=False)
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=remove_when_checkpointed, daemon=True)
        watcher.start()
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, work=work), {"cpu": 1}),
            param_space={"name": tune.grid_search(["t0", "t1"])},
            tune_config=tune.TuneConfig(reuse_actors=False),
            run_config=tune.RunConfig(
                name="exp",
                storage_path=work,
                failure_config=tune.FailureConfig(max_failures=3),
                verbose=0,
            ),
        )
        grid = tuner.fit()
        watcher.join(timeout=5)
        out["victim"] = victim.get("node")
        out["results"] = {
            r.config["name"]: {"it": r.metrics.get("it"), "error": None if r.error is None
                               else str(r.error)[:300]}
            for r in grid
        }
        out["runs"] = {
            name: [json.loads(line) for line in Path(work, f"{name}.log").read_text().splitlines()]
            for name in ("t0", "t1")
        }
        out["node_ids"] = {"a": node_a.node_id, "b": node_b.node_id}
    finally:
        Path(work, "summary.json").write_text(json.dumps(out))
        ray.shutdown()
        cluster.shutdown()


def _odd_prepare(odd_node: str):
    def prepare(name, source=None, cache_dir=None, progress=False):
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"checksum": "bad" if node == odd_node else f"sum-{name}"}

    return prepare


# ------------------------------------------------------------------------------------ the test
def test_two_workers_trials_on_both_and_node_loss_resumes_elsewhere(tmp_path: Path) -> None:
    from _processes import ProcessReaper

    env = dict(os.environ)
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S="0",
        RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS="0",
        PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        ),
    )
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)
    logfile = open(tmp_path / "script.log", "w")
    proc = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)], env=env, stdout=logfile, stderr=logfile
    )
    with ProcessReaper(proc.pid) as reaper:
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    alive = [pid for pid, cmd in reaper.seen.items() if _cmdline(pid) == cmd]
    assert not alive
    assert reaper.seen  # the script did start Ray processes, and they were tracked
    text = (tmp_path / "script.log").read_text()
    assert proc.returncode == 0, text[-4000:]
    out = json.loads((tmp_path / "summary.json").read_text())

    a, b = out["node_ids"]["a"], out["node_ids"]["b"]
    assert out["started_here"] is False and len(out["nodes"]) == 3
    assert out["auth_mode"] == "token"
    assert out["nodes"][a]["GPU"] == 1 and "GPU" not in out["nodes"][b]
    assert out["capacity_cpu"] == 2  # one per worker; the head has no CPU
    assert out["capacity_gpu"] == 2  # both on A: 0.5 GPU each, 0.5 CPU each
    assert "asks for CPU 2" in out["too_big"] and "CPU 1, GPU 1" in out["too_big"]
    assert out["gpu_task_node"] == a
    assert set(out["prepared"]) == set(out["nodes"]) and set(out["prepared"].values()) == {
        "sum-toy"
    }
    assert "nodes' caches differ" in out["mismatch"] and "bad" in out["mismatch"]

    done = {"it": ITERS, "error": None}
    assert out["results"] == {"t0": done, "t1": done}
    runs = out["runs"]
    assert {runs["t0"][0]["node"], runs["t1"][0]["node"]} == {a, b}  # trials on both workers
    assert out["victim"] == runs["t0"][0]["node"]
    assert len(runs["t0"]) >= 2  # t0 ran again after its node was removed ...
    assert runs["t0"][-1]["node"] != out["victim"]  # ... on the other node ...
    assert runs["t0"][-1]["start"] >= 1  # ... from its last checkpoint, not from scratch


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None


if __name__ == "__main__":
    _script(sys.argv[1])
