"""Training-step throughput of the models: images/s and achieved FLOP rate.

For each model, dataset shape and K, runs Adam steps (the paper's two groups, clipping at 1.0) on
random batches and prints images per second and the achieved FLOP rate (matmul + conv FLOPs of
one step counted by torch's FlopCounterMode, 2 per multiply-add) as a fraction of the machine's
fp32 matrix-multiply rate measured in the same run. `--bf16` adds a bf16-autocast row per case.

    python benchmarks/model_step.py                       # full grid (several minutes on CPU)
    python benchmarks/model_step.py --models mipet_betatcvae --datasets dsprites --k 3 --steps 5

The figures are indicative: on a shared machine other processes take cycles.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import models


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """Achieved FLOP/s of a large square matmul (the machine's practical peak)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        _sync(device)
        t = time.perf_counter()
        (a @ b).sum().item()
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bench_case(
    name: str, dataset: str, k: int | None, batch: int, steps: int, device: torch.device,
    bf16: bool, channels_last: bool,
) -> tuple[float, float]:
    """Returns (images per second, FLOPs per training step)."""
    torch.manual_seed(0)
    cfg = {"name": name, **models.dataset_defaults(dataset)}
    if k is not None:
        cfg["num_ipe"] = k
    model = models.build_model(models.ModelConfig.from_dict(cfg)).to(device)
    if channels_last:
        model.set_channels_last(True)
    opt = torch.optim.Adam(models.param_groups(model, 4e-4, 4e-4, 0.0))
    c = model.cfg.image_channels
    x = torch.rand(batch, c, 64, 64, device=device)
    if c == 1:
        x = (x > 0.5).float()

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, bf16):
            out = model(x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return out.loss

    with FlopCounterMode(display=False) as counter:
        step()
    flops = float(counter.get_total_flops())
    step()  # warm-up
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - t), flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["mipet_vae", "mipet_betatcvae", "mipet_commutative"])
    p.add_argument("--datasets", nargs="+", default=["dsprites", "shapes3d"])
    p.add_argument("--k", nargs="+", type=int, default=[1, 3, 5], help="K (commutative: 1 only unless --k-commutative)")
    p.add_argument("--k-commutative", action="store_true", help="also sweep K for the commutative model")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="add a bf16-autocast row per case")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW contiguous convs")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rate = matmul_rate(device)
    print(f"device {device}, threads {torch.get_num_threads()}, fp32 matmul {rate / 1e9:.1f} GFLOP/s")
    print(f"{'model':18} {'dataset':9} {'K':>2} {'mode':6} {'img/s':>8} {'GFLOP/step':>10} {'GFLOP/s':>8} {'of fp32 mm':>10}")
    for name in args.models:
        ks: list[int | None] = list(args.k)
        if "commutative" in name and not args.k_commutative:
            ks = [1]
        if models.MODELS[name].default_num_ipe == 0:
            ks = [None]
        for dataset in args.datasets:
            for k in ks:
                for bf16 in ([False, True] if args.bf16 else [False]):
                    ips, flops = bench_case(
                        name, dataset, k, args.batch, args.steps, device, bf16,
                        not args.no_channels_last,
                    )
                    achieved = flops * ips / args.batch
                    print(
                        f"{name:18} {dataset:9} {k if k is not None else 0:>2} "
                        f"{'bf16' if bf16 else 'fp32':6} {ips:8.1f} {flops / 1e9:10.2f} "
                        f"{achieved / 1e9:8.1f} {achieved / rate:10.1%}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
