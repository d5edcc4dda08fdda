"""Scale benchmark: the real sweep driver with trials that do no training.

`run_sweep` runs as it does for a user (the spec, SafeOptunaSearch with its journal, the trials
table written as trials end, Ray Tune's snapshots), with three things replaced in this process
only: the trainable sleeps `--train-s` and reports plausible metrics drawn from a seeded model
of the `paper` search space (MIG a smooth function of beta and K plus noise, so TPE has
something to learn); the dataset preparation on the nodes returns a fixed checksum; the noise
floor is skipped (it trains nothing but evaluates untrained models on the dataset). Ray gets
`--concurrent` logical CPUs, one per trial.

    python benchmarks/scale.py --trials 1000 --concurrent 50 --train-s 0.2
    python benchmarks/scale.py --trials 10000 --concurrent 400 --train-s 0.5 --json scale.json
    python benchmarks/scale.py --synthetic 10000     # rank/report/export of a 10,000-row table

Per window of `--window` ended trials it prints the driver's own CPU time per trial (all of the
driver process's threads, from /proc) and its parts (the sampler's `suggest`, the searcher's
bookkeeping of results, Tune's experiment snapshot with the searcher pickle and the journal
sync, the trials-table writes), the sampler's mean and largest time per suggestion, the longest
a trial slot waited for its next trial (from the end of one trial to the start of the next on
the same reused actor: suggestion and Ray's scheduling together), the driver's RSS and the size
of the sweep folder; then the time of `rank`, `report` and `export` on the result.
`--json FILE` writes the same figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ---- the simulated trial (runs in Ray workers) ------------------------------------------------
def simulated_metrics(config: dict[str, Any], trial_id: str) -> dict[str, float]:
    """Plausible final numbers of one trial of the `paper` space: MIG peaks at beta ~6 and K = 3
    for the beta models, is flat and lower for the commutative one; noise seeded by trial id."""
    import random
    import zlib

    model = config.get("model", {})
    name = model.get("name", "mipet_vae")
    rng = random.Random(zlib.crc32(trial_id.encode()))
    beta = float(model.get("beta", 1.0) or 1.0)
    k = int(model.get("num_ipe", 3) or 3)
    wd = float(config.get("train", {}).get("weight_decay", 0.0) or 0.0)
    if name == "mipet_commutative":
        hy = float(model.get("hy_rec", 0.1) or 0.1)
        mig = 0.12 + 0.04 * math.exp(-(math.log10(hy) + 1.0) ** 2)
    else:
        shape = math.exp(-((math.log(beta) - math.log(6.0)) ** 2) / (2 * 0.6 ** 2))
        bonus = 0.02 if name.endswith("tcvae") else 0.0
        mig = 0.05 + 0.3 * shape * (1 - 0.08 * abs(k - 3)) + bonus
    mig = max(0.0, mig - 50 * wd + rng.gauss(0, 0.02))
    recon = 25.0 + 6.0 * math.log(beta) + rng.gauss(0, 1.0)
    kl = 20.0 / beta ** 0.5 + rng.gauss(0, 0.5)
    return {"eval/mig": mig,
            "eval/dci_disentanglement": max(0.0, 0.8 * mig + rng.gauss(0, 0.02)),
            "eval/factor_vae": min(1.0, 0.5 + mig + rng.gauss(0, 0.03)),
            "train/loss": recon + beta * kl, "train/recon": recon, "train/kl": kl}


def simulated_trial(config: dict[str, Any], *, context: dict[str, Any]) -> None:
    """A trial that sleeps `train_s` and reports once, as `train_trial` reports a finished
    trial (the final numbers, `seed_results`), plus its own start and end times."""
    from ray import tune as ray_tune

    start = time.time()
    trial_id = ray_tune.get_context().get_trial_id() or "local"
    time.sleep(float(context["train_s"]))
    seed = int(config.get("seed", 0) or 0)
    steps = int(config.get("train", {}).get("steps", 1) or 1)
    final = simulated_metrics(config, trial_id)
    row = {**final, "step": steps, "seed": seed, "images_per_s": 1000.0,
           "train_seconds": context["train_s"], "setup_seconds": 0.0, "artifact_dir": None,
           "node": os.uname().nodename, "gpu_ids": "", "resumed_from_step": 0,
           "finished_at": time.time(), "started_at": start}
    ray_tune.report({**final, "step": steps, "total_step": steps, "seed": seed,
                     "seed_results": json.dumps([row]), "sim/start": start,
                     "sim/end": time.time(), "sim/pid": os.getpid()})


def _simulated_trainable(train_s: float, cpu: float):
    def trainable(spec, folder):
        from ray import tune as ray_tune

        context = {"train_s": train_s}
        return ray_tune.with_resources(
            ray_tune.with_parameters(simulated_trial, context=context), {"cpu": cpu})

    return trainable


# ---- measuring the driver ---------------------------------------------------------------------
def _cpu_s() -> float:
    """CPU seconds (user + system) of this process, all threads."""
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _folder_mib(folder: Path) -> float:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total / 2 ** 20


class Timers:
    """Wall time spent in named driver functions (wrapped in this process)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.max: dict[str, float] = {}

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                timers.total[name] = timers.total.get(name, 0.0) + dt
                timers.calls[name] = timers.calls.get(name, 0) + 1
                timers.max[name] = max(timers.max.get(name, 0.0), dt)

        setattr(owner, attr, timed)

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        return dict(self.total), dict(self.calls)

    def take_max(self) -> dict[str, float]:
        out, self.max = self.max, {}
        return out


class Windows:
    """Per-window figures, taken as trials end (called from the driver's trials writer)."""

    def __init__(self, window: int, folder: Path, timers: Timers) -> None:
        self.window, self.folder, self.timers = window, folder, timers
        self.ended = 0
        self.rows: list[dict[str, Any]] = []
        self._last_end: dict[int, float] = {}
        self._wait_max = 0.0
        self._mark()

    def _mark(self) -> None:
        self._t, self._cpu = time.perf_counter(), _cpu_s()
        self._totals, self._calls = self.timers.snapshot()
        self._wait_max = 0.0

    def trial_ended(self, trial: Any) -> None:
        result = dict(trial.last_result or {})
        pid, start, end = result.get("sim/pid"), result.get("sim/start"), result.get("sim/end")
        if pid is not None and start is not None:
            last = self._last_end.get(pid)
            if last is not None and start > last:
                self._wait_max = max(self._wait_max, start - last)
            self._last_end[pid] = float(end)
        self.ended += 1
        if self.ended % self.window == 0:
            self.close_window()

    def close_window(self) -> None:
        n = self.ended - sum(r["window_trials"] for r in self.rows)
        if n <= 0:
            return
        totals, calls = self.timers.snapshot()
        part = {k: totals.get(k, 0.0) - self._totals.get(k, 0.0) for k in totals}
        count = {k: calls.get(k, 0) - self._calls.get(k, 0) for k in calls}
        peaks = self.timers.take_max()
        suggests = max(1, count.get("suggest", 0))
        row = {
            "trials": self.ended, "window_trials": n,
            "wall_s_per_trial": (time.perf_counter() - self._t) / n,
            "driver_s_per_trial": (_cpu_s() - self._cpu) / n,
            "suggest_s": part.get("suggest", 0.0) / suggests,
            "suggest_s_max": peaks.get("suggest", 0.0),
            "wait_s_max": self._wait_max,
            "results_s_per_trial": part.get("searcher_results", 0.0) / n,
            "snapshot_s_per_trial": part.get("snapshot", 0.0) / n,
            "snapshots": count.get("snapshot", 0),
            "snapshot_s_max": peaks.get("snapshot", 0.0),
            "journal_sync_s_max": peaks.get("journal_sync", 0.0),
            "table_s_per_trial": part.get("table", 0.0) / n,
            "table_s_max": peaks.get("table", 0.0),
            "rss_mib": _rss_mib(),
            "folder_mib": _folder_mib(self.folder),
        }
        self.rows.append(row)
        _print_window(row)
        _print_growth()
        self._mark()


_TRACE: dict[str, Any] = {}


def _print_growth(top: int = 8) -> None:
    """With `--tracemalloc`: where the driver's Python memory grew since the last window."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        return
    snap = tracemalloc.take_snapshot()
    last = _TRACE.get("snapshot")
    _TRACE["snapshot"] = snap
    if last is None:
        return
    for stat in snap.compare_to(last, "lineno")[:top]:
        frame = stat.traceback[0]
        print(f"    {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+7d} blocks  "
              f"{frame.filename}:{frame.lineno}", flush=True)


def _print_window(r: dict[str, Any]) -> None:
    print(f"trials {r['trials']:6d}: driver {r['driver_s_per_trial'] * 1e3:7.1f} ms/trial "
          f"(wall {r['wall_s_per_trial'] * 1e3:6.1f}) | suggest {r['suggest_s'] * 1e3:6.1f} ms "
          f"(max {r['suggest_s_max'] * 1e3:6.1f}) | results {r['results_s_per_trial'] * 1e3:5.1f}"
          f" | snapshot {r['snapshot_s_per_trial'] * 1e3:5.1f} ms/trial ({r['snapshots']}x, "
          f"max {r['snapshot_s_max']:.2f} s) | table {r['table_s_per_trial'] * 1e3:5.1f} "
          f"(max {r['table_s_max'] * 1e3:.0f}) ms | wait max {r['wait_s_max']:5.2f} s | "
          f"RSS {r['rss_mib']:6.0f} MiB | folder {r['folder_mib']:7.1f} MiB", flush=True)


def instrument(windows_box: list, timers: Timers) -> None:
    """Wrap the driver's per-trial work with timers (this process only)."""
    from ray.tune.execution.tune_controller import TuneController

    import tune.sweep.searcher as searcher
    import tune.sweep.table as table

    timers.wrap(searcher.SafeOptunaSearch, "suggest", "suggest")
    timers.wrap(searcher.SafeOptunaSearch, "on_trial_complete", "searcher_results")
    timers.wrap(searcher.SafeOptunaSearch, "on_trial_result", "searcher_results")
    timers.wrap(searcher, "sync_journal", "journal_sync")
    timers.wrap(TuneController, "save_to_dir", "snapshot")
    original = table.record_trial

    def record_trial(trial: Any, *, error: str | None) -> None:
        t0 = time.perf_counter()
        original(trial, error=error)
        dt = time.perf_counter() - t0
        timers.total["table"] = timers.total.get("table", 0.0) + dt
        timers.calls["table"] = timers.calls.get("table", 0) + 1
        timers.max["table"] = max(timers.max.get("table", 0.0), dt)
        if windows_box:
            windows_box[0].trial_ended(trial)

    table.record_trial = record_trial


# ---- the run ----------------------------------------------------------------------------------
def sweep_spec(args: argparse.Namespace, storage: Path):
    from tune.config.sweep import SweepSpec

    sampler: dict[str, Any] = {"kind": args.sampler, "seed": 0}
    if args.n_ei_candidates:
        sampler["n_ei_candidates"] = args.n_ei_candidates
    if args.constant_liar is not None:
        sampler["constant_liar"] = args.constant_liar == "on"
    if getattr(args, "max_history", 0):
        sampler["max_history"] = args.max_history
    return SweepSpec.from_dict({
        "name": "scale", "space": "paper", "storage": str(storage),
        "base": {"data": {"name": "dsprites"}, "train": {"steps": 1000},
                 "eval": {"protocol": "fast", "metrics": ["mig", "dci", "factor_vae"]}},
        "num_samples": args.trials, "seeds": 1, "metric": ["eval/mig"], "mode": ["max"],
        "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": args.concurrent,
        "sampler": sampler, "max_failures": 0, "reuse_actors": True,
    })


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    import tune.sweep.driver as driver
    import tune.sweep.nodes as nodes

    storage = Path(args.folder or tempfile.mkdtemp(prefix="mipet-scale-")).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    spec = sweep_spec(args, storage)
    driver.set_ray_env()
    ray.init(num_cpus=args.concurrent, num_gpus=0, include_dashboard=False,
             log_to_driver=False, logging_level="warning", object_store_memory=200_000_000,
             _system_config={"enable_worker_prestart": False})
    timers = Timers()
    box: list = []
    instrument(box, timers)
    driver._trainable = _simulated_trainable(args.train_s, 1)
    driver.write_sweep_floor = lambda *a, **k: None  # evaluates untrained models: no sim
    nodes.prepare_on_all_nodes = lambda *a, **k: "simulated"
    box.append(Windows(args.window, storage / spec.name, timers))
    rss0, t0 = _rss_mib(), time.perf_counter()
    result = driver.run_sweep(spec, verbose=0, analyse=False)
    fit_s = time.perf_counter() - t0
    box[0].close_window()
    ray.shutdown()
    out: dict[str, Any] = {"trials": args.trials, "concurrent": args.concurrent,
                           "train_s": args.train_s, "sampler": spec.sampler.__dict__,
                           "run_s": fit_s, "rss0_mib": rss0, "finished": result.finished,
                           "windows": box[0].rows, "folder": str(result.folder)}
    out.update(analyse(result.folder))
    return out


def analyse(folder: Path) -> dict[str, float]:
    """Time `rank`, `report` and `export` on a sweep folder, as `mipet-tune` runs them."""
    from tune.sweep.results import export, rank_text, report

    out = {}
    for name, fn in (("rank", lambda: rank_text(folder, top=20)),
                     ("report", lambda: report(folder)),
                     ("export", lambda: export(folder))):
        t0 = time.perf_counter()
        fn()
        out[f"{name}_s"] = time.perf_counter() - t0
        print(f"{name}: {out[f'{name}_s']:.2f} s", flush=True)
    return out


def synthetic_folder(n: int, root: Path) -> Path:
    """A sweep folder with an `n`-trial table over the `paper` space (metrics from
    `simulated_metrics`), as the driver writes it, without Ray."""
    import optuna
    import yaml

    from analysis.floor import floor_rows
    from tune.sweep.folder import write_marker
    from tune.sweep.table import sorted_table, trial_rows_of, write_trials
    from tune.sweep.tuner import TrialSpace, load_space_for

    args = argparse.Namespace(trials=n, concurrent=1, sampler="random", n_ei_candidates=0,
                              constant_liar=None, max_history=0)
    spec = sweep_spec(args, root)
    folder = root / spec.name
    if (folder / "trials.parquet").is_file():
        import pyarrow.parquet as pq

        if pq.ParquetFile(folder / "trials.parquet").metadata.num_rows == n:
            return folder  # made by an earlier run
    folder.mkdir(parents=True, exist_ok=True)
    base = spec.run_config()
    space = load_space_for(spec, base)
    resolved = spec.to_dict()
    resolved["resolved"] = {"space": space.to_dict(), "base": base.to_dict()}
    (folder / "sweep.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    write_marker(folder, spec.name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    make = TrialSpace(space, {})
    rows = []
    for i in range(n):
        flat = make(study.ask())
        config = spec.run_config(flat).to_dict()
        tid = f"{i:05d}"
        final = simulated_metrics(config, tid)
        metrics = {**final, "trial_id": tid, "step": 1000, "seed": 0,
                   "seed_results": json.dumps([{**final, "seed": 0, "step": 1000}])}
        rows += trial_rows_of(trial_id=tid, config=config, metrics=metrics, error=None,
                              checkpoint_path=None, trial_dir=None, over=True,
                              data_checksum="synthetic")
    write_trials(folder, sorted_table(rows))
    import pandas as pd

    floor = pd.DataFrame([floor_rows(m, "dsprites", s, "fast",
                                     {"mig": 0.004 + 0.001 * s, "dci_disentanglement": 0.01,
                                      "factor_vae": 0.3})
                          for m in ("mipet_vae", "mipet_betatcvae", "mipet_commutative")
                          for s in range(3)])
    floor.to_parquet(folder / "floor.parquet", index=False)
    return folder


def suggest_curve(sizes: list[int], args: argparse.Namespace, asks: int = 20) -> list[dict]:
    """The sampler's time per suggestion (no Ray) on a study holding N finished trials of the
    `paper` space (values from `simulated_metrics`) and `args.concurrent` running ones."""
    import optuna

    from tune.sweep.tuner import TrialSpace, load_space_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = sweep_spec(args, Path(tempfile.gettempdir()))
    space = TrialSpace(load_space_for(spec, spec.run_config()), {})
    s = spec.sampler
    if s.max_history:
        from tune.sweep.searcher import bounded_tpe_sampler

        sampler = bounded_tpe_sampler(s.max_history, seed=0, **s.tpe_options())
    else:
        sampler = optuna.samplers.TPESampler(seed=0, **s.tpe_options())
    study = optuna.create_study(direction="maximize", sampler=sampler)
    filler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    out, have = [], 0
    for n in sorted(sizes):
        trials = []
        for i in range(have, n):
            t = filler.ask()
            flat = space(t)
            value = simulated_metrics(spec.run_config(flat).to_dict(), f"{i:05d}")["eval/mig"]
            trials.append(optuna.trial.create_trial(params=t.params,
                                                    distributions=t.distributions, value=value))
        study.add_trials(trials)
        have = n
        running = [study.ask() for _ in range(args.concurrent)]
        for t in running:
            space(t)
        times = []
        for _ in range(asks):
            t0 = time.perf_counter()
            t = study.ask()
            space(t)
            times.append(time.perf_counter() - t0)
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        for t in running:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
        row = {"finished": n, "running": args.concurrent, "suggest_s": sum(times) / asks,
               "suggest_s_max": max(times), "sampler": {"kind": "tpe", **s.tpe_options(),
                                                    "max_history": s.max_history}}
        print(f"TPE {s.tpe_options() or 'defaults'} history {s.max_history or 'all'}: "
              f"{n:6d} finished, {args.concurrent} running:"
              f" {row['suggest_s'] * 1e3:7.1f} ms per suggestion (max "
              f"{row['suggest_s_max'] * 1e3:.1f})", flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--concurrent", type=int, default=50)
    p.add_argument("--train-s", type=float, default=0.5, help="simulated training time")
    p.add_argument("--window", type=int, default=1000, help="ended trials per printed window")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "qmc", "gp"])
    p.add_argument("--n-ei-candidates", type=int, default=0, help="TPE's candidates (0: default)")
    p.add_argument("--constant-liar", choices=["on", "off"], default=None)
    p.add_argument("--max-history", type=int, default=0,
                   help="TPE models at most this many finished trials (0: all)")
    p.add_argument("--folder", help="where the sweep folder goes (default: a new temp folder)")
    p.add_argument("--synthetic", type=int, default=0,
                   help="only time rank/report/export on a synthetic table of this many trials")
    p.add_argument("--suggest-curve", default="",
                   help="only time TPE's suggestions without Ray at these study sizes, e.g. "
                   "1000,3000,10000 (--concurrent running trials beside them)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="print where the driver's memory grew in each window (slow)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--fold-every-trial", action="store_true",
                   help="rewrite trials.parquet at every ended trial (the old behaviour)")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.suggest_curve:
        sizes = [int(x) for x in args.suggest_curve.split(",")]
        out = {"suggest_curve": suggest_curve(sizes, args), "windows": []}
    elif args.synthetic:
        root = Path(args.folder or tempfile.mkdtemp(prefix="mipet-scale-")).resolve()
        t0 = time.perf_counter()
        folder = synthetic_folder(args.synthetic, root)
        print(f"synthetic table of {args.synthetic} trials in {time.perf_counter() - t0:.1f} s: "
              f"{folder}", flush=True)
        out: dict[str, Any] = {"trials": args.synthetic, "windows": [], **analyse(folder)}
    else:
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start()
        if args.fold_every_trial:
            import tune.sweep.table as table

            table.FOLD_FRACTION = 0.0
        out = run(args)
        w = out["windows"]
        if len(w) >= 2:
            first, last = w[0], w[-1]
            span = max(1, last["trials"] - first["trials"])
            growth = (last["rss_mib"] - first["rss_mib"]) / span
            out["rss_kib_per_trial"] = growth * 1024
            print(f"RSS growth {growth * 1024:.1f} KiB/trial from trial {first['trials']} to "
                  f"{last['trials']}; driver cost ratio last/first window "
                  f"{last['driver_s_per_trial'] / max(first['driver_s_per_trial'], 1e-9):.2f}",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
