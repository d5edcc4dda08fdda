"""Timings of the disentanglement metrics (analysis.metrics); prints a table.

    python benchmarks/metrics.py                 # synthetic 10-latent codes, dlib + fast
    python benchmarks/metrics.py --reference     # also DCI as disentanglement_lib runs it
                                                 # (sklearn, factor after factor) and DCI
                                                 # without the histogram split search
    python benchmarks/metrics.py --model         # + a dSprites model, full dlib suite with
                                                 # the representation cache, then each
                                                 # metric again on the filled cache (the
                                                 # algorithms alone; needs models,
                                                 # tune.data and torch)
    python benchmarks/metrics.py --model --nocache-scale 1.0   # + the same without the cache

Synthetic data: four factors of 3, 6, 10 and 8 values (the sizes of the spec's synthetic
cases) and three 10-latent codes (see ``synthetic_reps``). Times are wall and process CPU
seconds; on a shared machine only the CPU column measures the work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from analysis.metrics import (  # noqa: E402
    DEFAULT_METRICS,
    METRICS,
    CachedRepresentation,
    evaluate,
)
from analysis.metrics.synthetic import SyntheticData, factor_representation  # noqa: E402

CPU: dict[str, float] = {"last": 0.0}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run fn; return (result, wall seconds) and keep its process CPU seconds in CPU["last"].

    On a shared machine the wall time depends on the other jobs; the CPU time (all threads of
    this process) measures the work itself.
    """
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    CPU["last"] = time.process_time() - cpu
    return out, time.perf_counter() - start


def synthetic_reps(
    data: SyntheticData,
) -> dict[str, Callable[[], Callable[[np.ndarray], np.ndarray]]]:
    """Factories of three 10-latent codes (a fresh factory draws the same noise again) of the
    4-factor synthetic data.

    "discrete": 4 factor latents + 6 latents that are functions of the image (the data set has
    only 1,440 images, so every latent takes at most 1,440 values); "mixed": 4 factor latents
    + 6 latents of Gaussian noise (like the spec's synthetic case a); "continuous": the mixed
    codes times a random 10x10 matrix (every latent continuous and entangled; an encoder's
    codes on dSprites' 737,280 images are of this kind).
    """
    factors = factor_representation(data)
    mix = np.random.RandomState(1).randn(10, 10)

    def mixed() -> Callable[[np.ndarray], np.ndarray]:
        rng = np.random.RandomState(0)

        def rep(obs: np.ndarray) -> np.ndarray:
            noise = rng.randn(len(obs), 6).astype(np.float32) * 0.5
            return np.concatenate([factors(obs), noise], axis=1)

        return rep

    def continuous() -> Callable[[np.ndarray], np.ndarray]:
        rep = mixed()
        return lambda obs: (rep(obs) @ mix).astype(np.float32)

    return {
        "discrete": lambda: factor_representation(data, noise_dims=6),
        "mixed": mixed,
        "continuous": continuous,
    }


def bench_synthetic(args: argparse.Namespace) -> None:
    data = SyntheticData((3, 6, 10, 8))
    for name, make in synthetic_reps(data).items():
        print(f"\n== synthetic 10-latent codes, {name} ==")
        total = total_cpu = 0.0
        values: dict[str, float] = {}
        per_metric: list[tuple[str, float]] = []
        print(f"  {'metric':<24s} {'wall':>8s} {'CPU':>8s}")
        for metric, fn in METRICS.items():
            out, secs = timed(lambda fn=fn, make=make: fn(data, make(), np.random.RandomState(0)))
            values.update(out)
            per_metric.append((metric, CPU["last"]))
            total += secs
            total_cpu += CPU["last"]
            shown = ", ".join(f"{k}={v:.4f}" for k, v in out.items())
            print(f"  {metric:<24s} {secs:7.2f}s {CPU['last']:7.2f}s   {shown}")
        print(f"  {'suite, one metric after the other':<24s} {total:7.2f}s {total_cpu:7.2f}s")
        out, secs = timed(lambda make=make: evaluate(data, make(), n_jobs=2))
        same = all(out[k] == values[k] for k in out) if name == "discrete" else "n/a (noise)"
        print(f"  {'suite, evaluate(n_jobs=2)':<24s} {secs:7.2f}s {CPU['last']:7.2f}s"
              f"   same values: {same}")
        if args.reference:
            ref, secs_ref = timed(
                lambda make=make: METRICS["dci"](
                    data, make(), np.random.RandomState(0), engine="sklearn", n_jobs=1
                )
            )
            cpu_ref = CPU["last"]
            diff = max(abs(ref[k] - values[k]) for k in ref)
            dci_cpu = next(t for m, t in per_metric if m == "dci")
            print(
                f"  DCI as dlib (sklearn GBC, factor after factor): {secs_ref:.2f}s wall, "
                f"{cpu_ref:.2f}s CPU vs ours {dci_cpu:.2f}s CPU ({cpu_ref / dci_cpu:.1f}x less "
                f"CPU); max |value diff| {diff:.1e}"
            )
            import analysis.metrics._gbt as gbt  # the histogram switch, for this line only

            saved, gbt.MAX_BINS = gbt.MAX_BINS, 0
            try:
                plain, _ = timed(
                    lambda make=make: METRICS["dci"](
                        data, make(), np.random.RandomState(0), n_jobs=1
                    )
                )
            finally:
                gbt.MAX_BINS = saved
            diff = max(abs(plain[k] - values[k]) for k in plain)
            print(
                f"  DCI without the histogram search (sorted scan of every code, as before): "
                f"{CPU['last']:.2f}s CPU; max |value diff| {diff:.1e}"
            )
            baseline = total_cpu - dci_cpu + cpu_ref
            print(
                f"  suite CPU: dlib-style {baseline:.2f}s -> ours {total_cpu:.2f}s "
                f"({baseline / total_cpu:.1f}x less CPU; threads add parallelism on free cores)"
            )
        out, secs = timed(lambda make=make: evaluate(data, make(), protocol="fast"))
        print(f"  fast protocol ({', '.join(DEFAULT_METRICS['fast'])}): {secs:.2f}s wall, "
              f"{CPU['last']:.2f}s CPU")
        out, secs = timed(
            lambda make=make: evaluate(data, make(), protocol="fast",
                                       metrics=["mig", "dci", "factor_vae"])
        )
        print(f"  fast protocol (mig, dci, factor_vae): {secs:.2f}s wall, {CPU['last']:.2f}s CPU")


def bench_model(args: argparse.Namespace) -> None:
    try:
        import torch

        import models
        from tune.data import load_dataset, model_defaults
    except ImportError as exc:  # pragma: no cover - optional part
        print(f"\n(model part skipped: {exc})")
        return
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)
    data, secs = timed(lambda: load_dataset("dsprites"))
    print(f"\n== dSprites ({len(data)} images) + untrained beta_vae encoder, CPU ==")
    print(f"  load dataset: {secs:.1f} s")
    cfg = models.ModelConfig.from_dict({"name": "beta_vae", **model_defaults("dsprites")})
    model = models.build_model(cfg).eval()
    probe = np.arange(8)
    scale = (float(np.max(data.observations_at(probe)))
             / max(float(np.max(data.images_at(probe))), 1))

    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.float() * scale if x.dtype == torch.uint8 else x.float()
        with torch.no_grad():
            mu, _ = model.encode(x.permute(0, 3, 1, 2))
        return mu.numpy()

    def represent(obs: np.ndarray) -> np.ndarray:  # no cache: encode in chunks of 2048
        return np.concatenate([encode(obs[i : i + 2048]) for i in range(0, len(obs), 2048)])

    _, secs = timed(lambda: encode(data.images_at(np.arange(4096))))
    per_image_cpu = CPU["last"] / 4096
    print(f"  encoder: {4096 / secs:.0f} images/s wall, {per_image_cpu * 1e3:.3f} ms CPU/image")
    # An untrained encoder's latents have std < 0.05, which dlib's FactorVAE prunes (it would
    # then stop before its votes); threshold 0 keeps the full FactorVAE workload in the timing.
    fvae = {"prune_threshold": 0.0}
    cache = CachedRepresentation(data, encode, batch_size=4096)
    cached, secs_cached = timed(
        lambda: evaluate(cache.data, cache.represent, seed=0, n_jobs=2, factor_vae=fvae)
    )
    cpu_cached = CPU["last"]
    print(
        f"  full dlib suite WITH cache: {secs_cached:.1f}s wall, {cpu_cached:.1f}s CPU; encoded "
        f"{cache.num_encoded} distinct images for {cache.num_lookups} draws "
        f"({cache.num_lookups / cache.num_encoded:.1f}x)"
    )
    # The same calls again find every code in the cache: the metric algorithms alone.
    print(f"  {'metric, representations cached':<32s} {'wall':>8s} {'CPU':>8s}")
    algo_wall = algo_cpu = 0.0
    for name in DEFAULT_METRICS["dlib"]:
        kwargs = fvae if name == "factor_vae" else {}
        _, secs = timed(
            lambda fn=METRICS[name], kw=kwargs: fn(
                cache.data, cache.represent, np.random.RandomState(0), **kw
            )
        )
        algo_wall += secs
        algo_cpu += CPU["last"]
        print(f"  {name:<32s} {secs:7.2f}s {CPU['last']:7.2f}s")
    print(f"  {'metric algorithms, all':<32s} {algo_wall:7.2f}s {algo_cpu:7.2f}s")
    encode_cpu = cache.num_encoded * per_image_cpu
    print(
        f"  encoding {cache.num_encoded} distinct images: about {encode_cpu:.0f}s CPU "
        f"({per_image_cpu * 1e3:.3f} ms each)"
    )
    metric_cpu = cpu_cached - encode_cpu
    _, _ = timed(lambda: data.sample(4096, np.random.RandomState(1)))
    per_draw = per_image_cpu + CPU["last"] / 4096
    projected = metric_cpu + cache.num_lookups * per_draw
    print(
        f"  WITHOUT cache, projected in CPU s from measured parts (metrics {metric_cpu:.0f}s + "
        f"{cache.num_lookups} draws x {per_draw * 1e3:.2f} ms to load+encode): {projected:.0f}s "
        f"-> the cache needs {projected / cpu_cached:.1f}x less CPU"
    )
    if args.nocache_scale > 0:
        s = args.nocache_scale
        big = {
            "beta_vae": {"num_train": int(10000 * s), "num_eval": int(5000 * s)},
            "factor_vae": {"num_train": int(10000 * s), "num_eval": int(5000 * s), **fvae},
        }
        cache2 = CachedRepresentation(data, encode, batch_size=4096)
        with_c, t_c = timed(lambda: evaluate(cache2.data, cache2.represent, seed=0, **big))
        c_c = CPU["last"]
        without, t_n = timed(lambda: evaluate(data, represent, seed=0, **big))
        c_n = CPU["last"]
        diff = max(abs(with_c[k] - without[k]) for k in with_c)
        print(
            f"  measured at BetaVAE/FactorVAE budgets x{s}: with cache {t_c:.1f}s wall "
            f"{c_c:.1f}s CPU, without {t_n:.1f}s wall {c_n:.1f}s CPU ({c_n / c_c:.1f}x CPU); "
            f"max |value diff| {diff:.2e}"
        )


def bench_encoder_pass(args: argparse.Namespace) -> None:
    """The evaluation's encoder pass (the representation cache encoding distinct dSprites rows
    through `tune.train.evaluation.Encoder`, as a trial's final evaluation does) against the
    model's own inference throughput: `model.encode` on ready float tensors in
    `torch.inference_mode`, at its best batch size among 256..4096, measured in the same run.
    Both in fp32 and bf16 (autocast); a pass slower than 1.3x of the model's own is marked."""
    try:
        import torch

        import models
        from tune.data import load_dataset, model_defaults
        from tune.train.evaluation import Encoder
    except ImportError as exc:  # pragma: no cover - optional part
        print(f"\n(encoder part skipped: {exc})")
        return
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(0)
    data = load_dataset("dsprites")
    cfg = models.ModelConfig.from_dict({"name": "beta_vae", **model_defaults("dsprites")})
    model = models.build_model(cfg).eval()
    n = args.encoder_images
    rows = np.random.RandomState(0).choice(len(data), size=n, replace=False)
    print(f"\n== encoder pass vs the model's own inference ({n} distinct dSprites images, "
          f"{torch.get_num_threads()} torch threads) ==")
    print("  (CPU ms per image: the work itself, which a shared machine does not inflate; the "
          "ratio is the pass's CPU per image over the model's own at its best batch)")
    print(f"  {'precision':<10s} {'own best':>11s} {'own img/s':>10s} {'own CPU ms':>11s} "
          f"{'pass img/s':>11s} {'pass CPU ms':>12s} {'ratio':>6s}")
    images = data.images_at(np.sort(rows[:4096]))
    for precision in ("fp32", "bf16"):
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
               else torch.autocast("cpu", enabled=False))
        own: dict[int, tuple[float, float]] = {}  # batch -> (CPU s per image, images/s wall)
        for batch in (256, 512, 1024, 2048, 4096):
            x = torch.from_numpy(images[:batch]).permute(0, 3, 1, 2).float().div(255.0)
            x = x.contiguous()
            reps = max(2, 8192 // batch)
            with torch.inference_mode(), ctx:
                model.encode(x[:64])  # warm-up (kernels, allocator)
                _, secs = timed(lambda x=x, reps=reps: [model.encode(x) for _ in range(reps)])
            own[batch] = (CPU["last"] / (reps * batch), reps * batch / secs)
        best = min(own, key=lambda b: own[b][0])
        # the evaluation's own settings: the Encoder's default batch, the cache's 2048
        encoder = Encoder(model, torch.device("cpu"), precision=precision)
        encoder(images[:64])
        cache = CachedRepresentation(data, encoder, batch_size=args.cache_batch or 2048)
        _, secs = timed(lambda cache=cache: cache.prefetch(rows))
        pass_cpu = CPU["last"] / n
        ratio = pass_cpu / own[best][0]
        flag = "" if ratio <= 1.3 else "   SLOWER than 1.3x"
        print(f"  {precision:<10s} {'batch ' + str(best):>11s} {own[best][1]:10.0f} "
              f"{own[best][0] * 1e3:11.3f} {n / secs:11.0f} {pass_cpu * 1e3:12.3f} "
              f"{ratio:6.2f}{flag}")
        print("    own CPU ms/img by batch: "
              + ", ".join(f"{b}: {v[0] * 1e3:.3f}" for b, v in own.items()))

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", action="store_true", help="time sklearn's DCI too")
    parser.add_argument("--model", action="store_true", help="dSprites model part")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--nocache-scale", type=float, default=0.0,
                        help="also measure without the cache at this BetaVAE/FactorVAE scale")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--encoder-images", type=int, default=16384,
                        help="distinct images of the encoder-pass timing (with --model)")
    parser.add_argument("--cache-batch", type=int, default=0,
                        help="the cache's batch in the encoder-pass timing (0: the evaluation's "
                             "2048)")
    parser.add_argument("--encoder-only", action="store_true",
                        help="with --model: only the encoder-pass timing")
    args = parser.parse_args()
    print(f"CPUs available: {len(os.sched_getaffinity(0))}; load average {os.getloadavg()}")
    if not args.skip_synthetic:
        bench_synthetic(args)
    if args.model:
        bench_encoder_pass(args)
        if not args.encoder_only:
            bench_model(args)


if __name__ == "__main__":
    main()
