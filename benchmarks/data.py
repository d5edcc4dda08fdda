"""Dataset speed and memory figures (prints them; asserts nothing).

    python benchmarks/data.py [--cache-dir DIR] [--reuse]

1. time to generate all 737,280 dSprites images into a fresh cache (target < 60 s on 2 cores);
2. time to open the cached dataset, in this process and in a fresh interpreter (target < 1 s);
3. time for a random batch of 256 (images_at, observations_at, the training loader; < 2 ms);
4. time to sample 1M factor rows and map them to image indices (sample_factors + index_of);
5. PSS/RSS of four processes that open the same dataset and touch every page
   (target: the dataset's bytes once by PSS, plus small change);
6. time for a batch of 256 from the generators that draw on demand (3D Shapes, MPI3D).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tune.data import load_dataset, prepare_dataset
from tune.data._build import cpu_count

_HOLDER = """
import sys, time, numpy as np
from tune.data import load_dataset
data = load_dataset("dsprites", cache_dir=sys.argv[1])
arr = data._store.array
total = 0
for s in range(0, len(arr), 65536):
    total += int(np.asarray(arr[s:s + 65536]).sum(dtype=np.int64))
x = data.observations_at(np.arange(0, len(data), 997))
print("ready", total, flush=True)
sys.stdin.read()
"""


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def _timeit(fn, repeat: int) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder")
    parser.add_argument("--reuse", action="store_true", help="keep an existing cache")
    args = parser.parse_args()
    tmp = None
    cache = args.cache_dir
    if cache is None:
        tmp = tempfile.mkdtemp(prefix="mipet-bench-")
        cache = tmp
    elif not args.reuse:
        for p in Path(cache).glob("dsprites-gen-*"):
            p.unlink()
    try:
        print(f"machine: {cpu_count()} usable cores, load average {os.getloadavg()[0]:.1f}")
        t = time.perf_counter()
        summary = prepare_dataset("dsprites", cache_dir=cache)
        build = time.perf_counter() - t
        what = "generate + write + checksum" if summary["built"] else "verify existing cache"
        print(f"1. dSprites, all {summary['images']:,} images ({what}): {build:.1f} s; "
              f"cache {summary['bytes'] / 2**20:.0f} MiB bit-packed")

        t = time.perf_counter()
        data = load_dataset("dsprites", cache_dir=cache)
        opened = time.perf_counter() - t
        code = ("import time; t0 = time.perf_counter(); import models.errors; "
                "t1 = time.perf_counter(); from tune.data import load_dataset; "
                f"d = load_dataset('dsprites', cache_dir={cache!r}); "
                "print(t1 - t0, time.perf_counter() - t1)")
        imp, fresh = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True,
                                               text=True, check=True).stdout.split())
        print(f"2. open cached dataset: {opened * 1e3:.1f} ms in-process; in a fresh interpreter "
              f"{fresh * 1e3:.0f} ms after `import models` ({imp * 1e3:.0f} ms: it imports torch)")

        rng = np.random.default_rng(0)
        n = len(data)
        t_img = _timeit(lambda: data.images_at(rng.integers(0, n, 256)), 300)
        t_obs = _timeit(lambda: data.observations_at(rng.integers(0, n, 256)), 300)
        try:
            import torch

            torch.set_num_threads(1)
            loader = data.loader(256, seed=0)
            t_load = _timeit(lambda: next(loader), 300)
            loader_txt = f"{t_load * 1e3:.2f} ms (loader: float32 torch (256, 1, 64, 64))"
        except ImportError:
            loader_txt = "torch missing"
        print(f"3. random batch of 256: images_at {t_img * 1e3:.2f} ms (uint8), observations_at "
              f"{t_obs * 1e3:.2f} ms (float32), {loader_txt}")

        rs = np.random.RandomState(0)
        t = time.perf_counter()
        factors = data.sample_factors(1_000_000, rs)
        data.index_of(factors)  # timed: factor rows -> flat indices
        t_idx = time.perf_counter() - t
        rs = np.random.RandomState(1)
        t64 = _timeit(lambda: data.sample_observations(64, rs), 300)
        t10k = _timeit(lambda: data.sample_observations(10_000, rs), 5)
        print(f"4. 1M factor rows -> image indices: {t_idx * 1e3:.0f} ms; sample_observations: "
              f"{t64 * 1e3:.2f} ms for 64 (a FactorVAE vote), {t10k * 1e3:.0f} ms for 10,000")

        procs = [subprocess.Popen([sys.executable, "-c", _HOLDER, cache], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()
        rolls = [_rollup(p.pid) for p in procs]
        for p in procs:
            assert p.stdin is not None
            p.stdin.close()
            p.wait()
        pss = sum(r["Pss"] for r in rolls)
        rss = sum(r["Rss"] for r in rolls)
        file_pss = sum(r.get("Pss_File", 0) for r in rolls)
        anon_pss = sum(r.get("Pss_Anon", 0) for r in rolls)
        print(f"5. four processes holding every page of the {summary['bytes'] / 2**20:.0f} MiB "
              f"cache: PSS {pss / 2**20:.0f} MiB in total (file-backed {file_pss / 2**20:.0f} "
              f"MiB, anonymous {anon_pss / 2**20:.0f} MiB: interpreters and libraries), "
              f"RSS {rss / 2**20:.0f} MiB in total; per process PSS "
              + ", ".join(f"{r['Pss'] / 2**20:.0f}" for r in rolls) + " MiB")

        parts = []
        for name in ("shapes3d", "mpi3d_toy"):
            d = load_dataset(name, cache_dir=cache)
            t = time.perf_counter()
            d.images_at([0])  # builds the per-process tables
            first = time.perf_counter() - t
            t256 = _timeit(lambda: d.images_at(rng.integers(0, len(d), 256)), 30)  # noqa: B023
            parts.append(f"{name} {t256 * 1e3:.0f} ms (tables {first:.1f} s once per process)")
        print("6. drawn on demand, random batch of 256: " + "; ".join(parts))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
