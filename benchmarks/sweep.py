"""How much of a sweep's wall time is training: a 16-trial sweep at concurrency 2.

Prints the share of wall time spent inside training steps (summed over trials, divided by
concurrency x wall time; target: at least 85% on the 2-core machine), the driver's memory
(peak RSS and PSS of this process) and the per-trial start-up cost (in-trial setup: data, model,
optimizer; and the slot time not spent training, per trial).

    python benchmarks/sweep.py                     # 16 trials x 300 steps of batch 64
    python benchmarks/sweep.py --trials 4 --steps 50
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path


def pss_mib(pid: str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default=None, help="sweep parent folder (default: a temp dir)")
    args = parser.parse_args()

    import pandas as pd

    from tune.config.sweep import SweepSpec
    from tune.sweep.driver import run_sweep

    out = Path(args.out or tempfile.mkdtemp(prefix="mipet-bench-sweep-"))
    spec = SweepSpec.from_dict({
        "name": "bench",
        "base": {
            "model": {"name": "mipet_vae", "latent_dim": 10},
            "train": {"steps": args.steps, "batch_size": args.batch,
                      "report_every": max(1, args.steps // 4),
                      "checkpoint_every": max(1, args.steps // 2), "images": False},
            "eval": {"protocol": "fast", "metrics": ["mig"]},
        },
        "space": {"params": {"model/beta": {"low": 1.0, "high": 8.0, "log": True},
                             "model/num_ipe": {"choices": [1, 2]}}},
        "num_samples": args.trials,
        "metric": ["eval/mig"], "mode": ["max"],
        "resources": {"cpu": 1},
        "max_concurrent": args.concurrency,
        "storage": str(out),
    })
    peak_pss = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak_pss[0] = max(peak_pss[0], pss_mib())
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    result = run_sweep(spec, verbose=0, analyse=False)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    df = pd.read_parquet(result.folder / "trials.parquet")
    done = df[~df["failed"]]
    train = float(done["train_seconds"].sum())
    setup = float(done["setup_seconds"].mean())
    slots = args.concurrency * wall
    print(f"trials: {len(df)} ({len(done)} finished), {args.steps} steps of batch {args.batch}, "
          f"concurrency {args.concurrency}")
    print(f"wall time (fit + prepare): {wall:.1f} s")
    print(f"time inside training steps: {train:.1f} s of {slots:.1f} slot-seconds = "
          f"{100 * train / slots:.1f}%  (target >= 85%)")
    print(f"per-trial start-up: in-trial setup {setup:.2f} s; slot time not training "
          f"{(slots - train) / max(1, len(df)):.2f} s per trial")
    print(f"driver memory: peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"
          f" MiB, peak PSS {peak_pss[0]:.0f} MiB")
    print(f"sweep folder: {result.folder}")


if __name__ == "__main__":
    main()
