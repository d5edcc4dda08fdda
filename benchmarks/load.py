"""Load test: many tiny trials through Ray Tune + SafeOptunaSearch, at the machine's concurrency.

Prints wall time, trials per minute, the driver's peak memory and its growth per trial (RSS and
PSS of this process, sampled every 0.25 s; target: flat), and the count of lost or duplicated
trials (target: 0), plus the Optuna study's consistency with the trials table.

    python benchmarks/load.py                      # 64 trials, trivial trainable (no torch)
    python benchmarks/load.py --engine sweep       # 64 trials of tiny VAEs via tune.sweep
    python benchmarks/load.py --trials 16 --iters 3
    python benchmarks/load.py --gpu-share          # 1, 2, 4 trials sharing one GPU (CUDA only)

The trivial trainable reports `--iters` results with a checkpoint each (tiny numpy work), so what
is measured is Tune's and the searcher's per-trial cost, the driver's memory, and bookkeeping.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


def _mem_mib(pid: int | str = "self") -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, from /proc/<pid>/smaps_rollup."""
    rss = pss = 0.0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) / 1024
    return rss, pss


FINISHED = {"trials": 0}  # bumped by a Tune callback in the driver


class MemorySampler:
    """Samples this process's RSS/PSS and the number of finished trials over time."""

    def __init__(self, interval_s: float = 0.25, count=None) -> None:
        self.samples: list[tuple[float, int, float, float]] = []  # (t, finished, rss, pss)
        self._count = count or (lambda: FINISHED["trials"])
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = _mem_mib()
            self.samples.append((time.monotonic(), self._count(), rss, pss))
            self._stop.wait(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def growth_per_trial(self, column: int) -> float:
        """Least-squares slope of memory (MiB) against finished trials, over the second half."""
        pts = [(s[1], s[column]) for s in self.samples]
        if not pts:
            return float("nan")
        half = max(1, pts[-1][0] // 2)
        pts = [p for p in pts if p[0] >= half]
        if len({x for x, _ in pts}) < 2:
            return float("nan")
        n = len(pts)
        mx = sum(x for x, _ in pts) / n
        my = sum(y for _, y in pts) / n
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        return sum((x - mx) * (y - my) for x, y in pts) / sxx


def space(trial) -> dict:
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.suggest_int("width", 4, 64, log=True)
    if trial.suggest_categorical("kind", ["a", "b"]) == "b":
        trial.suggest_float("beta", 1.0, 16.0, log=True)
    return {}


def trivial_trainable(config: dict, work: str, iters: int) -> None:
    import numpy as np
    from ray import tune

    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            start = json.loads(Path(folder, "s.json").read_text())["it"]
    rng = np.random.default_rng(0)
    w = rng.normal(size=(config["width"], 8))
    for it in range(start, iters):
        x = rng.normal(size=(64, config["width"]))
        loss = float(np.mean((x @ w) ** 2) * config["lr"] + 1.0 / (it + 1))
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "s.json").write_text(json.dumps({"it": it + 1}))
            tune.report({"loss": loss, "it": it + 1},
                        checkpoint=tune.Checkpoint.from_directory(folder))
    with open(Path(work, "done.txt"), "a") as fh:
        fh.write(tune.get_context().get_trial_id() + "\n")


def run_trivial(args: argparse.Namespace, work: Path) -> dict:
    import optuna
    from ray import tune

    from tune.sweep.connect import connect
    from tune.sweep.resources import check_resources
    from tune.sweep.searcher import (
        SafeOptunaSearch,
        make_study_storage,
        outcomes_from_results,
        reconcile_study,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cpus = os.cpu_count() or 1
    cluster = connect(None, num_cpus=cpus, object_store_memory=200_000_000,
                      logging_level="warning")
    concurrency = check_resources({"cpu": 1}, cpus, cluster)
    study = make_study_storage(work / "sweep", "load")
    searcher = SafeOptunaSearch(space, metric="loss", mode="min", seed=0,
                                study_name=study.study_name, mirror_path=study.path)
    sampler = MemorySampler()

    class Count(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            FINISHED["trials"] += 1

        def on_trial_error(self, iteration, trials, trial, **info):
            FINISHED["trials"] += 1

    fn = tune.with_resources(
        tune.with_parameters(trivial_trainable, work=str(work), iters=args.iters), {"cpu": 1}
    )
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, metric="loss", mode="min",
                                    num_samples=args.trials, max_concurrent_trials=concurrency,
                                    reuse_actors=not args.no_reuse),
        run_config=tune.RunConfig(name="ray", storage_path=str(work / "sweep"), verbose=0,
                                  callbacks=[Count()],
                                  failure_config=tune.FailureConfig(max_failures=2),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
    )
    t0 = time.perf_counter()
    with sampler:
        grid = tuner.fit()
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    study = make_study_storage(work / "sweep")
    rec = reconcile_study(study, None, outcomes_from_results(grid, "loss"))
    reconcile_s = time.perf_counter() - t1

    ot = optuna.load_study(study_name=study.study_name, storage=study.storage)
    states = [t.state.name for t in ot.trials]
    ids = [r.metrics.get("trial_id") for r in grid]
    done = (work / "done.txt").read_text().split() if (work / "done.txt").exists() else []
    configs = [json.dumps(r.config, sort_keys=True) for r in grid]
    finished = [r for r in grid if r.error is None and r.metrics.get("it") == args.iters]
    return {
        "engine": "trivial",
        "trials": args.trials,
        "concurrency": concurrency,
        "wall_s": wall,
        "samples": sampler.samples,
        "growth_rss": sampler.growth_per_trial(2),
        "growth_pss": sampler.growth_per_trial(3),
        "finished": len(finished),
        "lost": args.trials - len(set(ids) & set(done)),
        "duplicate_ids": len(ids) - len(set(ids)),
        "duplicate_configs": len(configs) - len(set(configs)),
        "reruns": len(done) - len(set(done)),
        "optuna_states": {s: states.count(s) for s in sorted(set(states))},
        "reconcile": {"added": len(rec.added), "failed": len(rec.failed_orphans)
                      + len(rec.failed_errored)},
        "reconcile_s": reconcile_s,
    }


def run_sweep_engine(args: argparse.Namespace, work: Path) -> dict:
    """64 tiny VAE trials through the product's own sweep driver (tune.sweep)."""
    import pandas as pd

    from tune.config.sweep import SweepSpec
    from tune.sweep.driver import run_sweep

    cpus = os.cpu_count() or 1
    spec = SweepSpec.from_dict({
        "name": "load",
        "storage": str(work),
        "num_samples": args.trials,
        "max_concurrent": cpus,
        "resources": {"cpu": 1},
        "base": {"train": {"steps": args.iters, "batch_size": 16, "report_every": 1,
                           "checkpoint_every": args.iters, "images": False, "num_threads": 1},
                 "model": {"latent_dim": 4}, "eval": {"protocol": "none"}},
        "metric": ["train/loss"], "mode": ["min"],
    })
    def count() -> int:  # trials whose result.json holds all their reports
        import ray

        try:  # Tune writes trial logs in the driver's session folder first, synced later
            session = Path(ray._private.worker._global_node.get_session_dir_path())
        except Exception:
            return 0
        n = 0
        for f in session.glob("artifacts/*/ray/driver_artifacts/*/result.json"):
            try:
                n += f.read_bytes().count(b"\n") >= args.iters
            except OSError:
                pass
        return n

    sampler = MemorySampler(interval_s=1.0, count=count)
    t0 = time.perf_counter()
    with sampler:
        result = run_sweep(spec, verbose=0, analyse=False)
    wall = time.perf_counter() - t0
    folder = getattr(result, "folder", result)
    df = pd.read_parquet(Path(folder) / "trials.parquet")
    ids = list(df["trial_id"]) if "trial_id" in df else list(df.index)
    return {
        "engine": "sweep", "trials": args.trials, "concurrency": cpus, "wall_s": wall,
        "samples": sampler.samples, "growth_rss": sampler.growth_per_trial(2),
        "growth_pss": sampler.growth_per_trial(3),
        "finished": int((df.get("status") == "TERMINATED").sum()) if "status" in df else len(df),
        "lost": args.trials - len(set(ids)), "duplicate_ids": len(ids) - len(set(ids)),
        "duplicate_configs": float("nan"), "reruns": float("nan"), "optuna_states": {},
        "reconcile": {}, "reconcile_s": float("nan"),
    }


def gpu_share(args: argparse.Namespace) -> None:
    """Aggregate images/s of 1, 2 and 4 training processes sharing one GPU."""
    try:
        import torch
    except ImportError:
        print("gpu-share: torch missing; skipped")
        return
    if not torch.cuda.is_available():
        print("gpu-share: no CUDA device; skipped")
        return
    import ray

    from tune.sweep.connect import connect

    connect(None, num_cpus=max(4, os.cpu_count() or 1), num_gpus=1, logging_level="warning")

    def train(steps: int, batch: int) -> tuple[float, int]:
        import torch
        from torch import nn

        torch.manual_seed(0)
        dev = torch.device("cuda")
        try:
            from models import ModelConfig, build_model

            model = build_model(ModelConfig(name="mipet_vae", image_channels=1,
                                            latent_dim=10, num_ipe=3)).to(dev)

            def step(x):
                return model(x).loss
        except Exception:  # the product's model API changed: a same-size conv VAE stand-in
            enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1),
                                nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                                nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 20))
            dec = nn.Sequential(nn.Linear(10, 256), nn.ReLU(), nn.Linear(256, 1024),
                                nn.Unflatten(1, (64, 4, 4)), nn.ReLU(),
                                nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(32, 1, 4, 2, 1))
            model = nn.ModuleList([enc, dec]).to(dev)

            def step(x):
                mu, logvar = enc(x).chunk(2, dim=1)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                rec = nn.functional.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
                return (rec - 0.5 * (1 + logvar - mu**2 - logvar.exp()).sum()) / x.shape[0]
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = (torch.rand(batch, 1, 64, 64, device=dev) > 0.5).float()
        for _ in range(10):  # warm-up
            opt.zero_grad()
            step(x).backward()
            opt.step()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            step(x).backward()
            opt.step()
        torch.cuda.synchronize()
        return time.perf_counter() - t, steps * batch

    for k in (1, 2, 4):
        task = ray.remote(train).options(num_gpus=1 / k, num_cpus=1)
        t = time.perf_counter()
        outs = ray.get([task.remote(args.gpu_steps, 64) for _ in range(k)])
        span = time.perf_counter() - t
        images = sum(n for _, n in outs)
        per = [n / s for s, n in outs]
        print(f"gpu-share k={k}: aggregate {sum(per):.0f} images/s (sum of per-process rates), "
              f"{images / span:.0f} images/s over the wall span {span:.1f} s")
    ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--iters", type=int, default=3, help="reports (or steps) per trial")
    ap.add_argument("--engine", choices=["trivial", "sweep"], default="trivial")
    ap.add_argument("--no-reuse", action="store_true", help="a new actor per trial")
    ap.add_argument("--gpu-share", action="store_true")
    ap.add_argument("--gpu-steps", type=int, default=200)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.gpu_share:
        gpu_share(args)
        return
    import shutil

    work = Path(tempfile.mkdtemp(prefix="mipet-load-"))
    try:
        run = run_sweep_engine if args.engine == "sweep" else run_trivial
        r = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    samples = r["samples"]
    peak_rss = max((s[2] for s in samples), default=float("nan"))
    peak_pss = max((s[3] for s in samples), default=float("nan"))
    first = samples[0] if samples else (0, 0, float("nan"), float("nan"))
    last = samples[-1] if samples else first
    print(f"engine {r['engine']}: {r['trials']} trials x {args.iters} reports, "
          f"concurrency {r['concurrency']}, reuse_actors={not args.no_reuse}, "
          f"{os.cpu_count()} CPUs")
    print(f"wall {r['wall_s']:.1f} s, {60 * r['trials'] / r['wall_s']:.1f} trials/min, "
          f"{r['wall_s'] / r['trials']:.2f} s/trial")
    print(f"driver memory: peak RSS {peak_rss:.0f} MiB, peak PSS {peak_pss:.0f} MiB; "
          f"start->end RSS {first[2]:.0f}->{last[2]:.0f} MiB, "
          f"PSS {first[3]:.0f}->{last[3]:.0f} MiB")
    print(f"driver growth per finished trial (second half, least squares): "
          f"RSS {r['growth_rss'] * 1024:+.0f} KiB, PSS {r['growth_pss'] * 1024:+.0f} KiB")
    print(f"trials finished {r['finished']}/{r['trials']}, lost {r['lost']}, duplicate ids "
          f"{r['duplicate_ids']}, duplicate configs {r['duplicate_configs']}, "
          f"re-run trials {r['reruns']}")
    if r["optuna_states"]:
        print(f"optuna study: {r['optuna_states']}; reconcile {r['reconcile']} in "
              f"{r['reconcile_s']:.2f} s")


if __name__ == "__main__":
    main()
