"""Training-step throughput of the models: images/s and achieved FLOP rate.

For each model, dataset shape and K, runs Adam steps (the paper's two groups, clipping at 1.0) on
random batches and prints images per second and the achieved FLOP rate (matmul + conv FLOPs of
one step counted by torch's FlopCounterMode, 2 per multiply-add) as a fraction of the machine's
fp32 matrix-multiply rate measured in the same run.

Modes (`--modes`): `fp32` the default model (channels_last convolutions, the decoder's
transposed convolutions as `models._fastconv.PhaseConvTranspose2d`); `nchw` the same model with
NCHW-contiguous convolutions and torch's own transposed convolution, the memory layout and
operators the paper code runs with (a stand-in for a direct port); `tf32` the default model with
TF32 matmuls and convolutions allowed (CUDA only; `fp32` turns TF32 off, so it is true fp32);
`bf16` the default model under bf16 autocast (losses stay float32); `fp32-ref` and `bf16-ref`
the `fp32` and `bf16` modes with torch's own transposed convolution in the decoder (the previous
implementation, to measure the phase path against it in one run).

    python benchmarks/model_step.py                       # full grid, fp32 (minutes on CPU)
    python benchmarks/model_step.py --models mipet_betatcvae --datasets dsprites --k 3 \
        --steps 5 --modes fp32 nchw bf16
    python benchmarks/model_step.py --models mipet_betatcvae --datasets dsprites --k 3 \
        --modes nchw fp32-ref fp32 bf16-ref bf16 --clock cpu --threads 1 --rounds 5
    python benchmarks/model_step.py --zoo                 # a row per zoo objective: dSprites,
                                                          # K = 0 and 3, fp32 and bf16

The figures are indicative: on a shared machine other processes take cycles. Rows are the best of
interleaved rounds; `--clock cpu --threads 1` reports per-core rates from process CPU time, which
other processes disturb much less than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

import models
from tune.data import model_defaults

ZOO = [
    "vae", "annealed_vae", "mipet_annealed_vae", "factor_vae", "mipet_factor_vae", "dip_vae_i",
    "mipet_dip_vae_i", "dip_vae_ii", "mipet_dip_vae_ii", "info_vae", "mipet_info_vae",
]
CLOCK = time.perf_counter  # --clock cpu switches to process CPU time (robust on a shared machine)


def matmul_rate(
    device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.0
) -> float:
    """Achieved FLOP/s of a large square matmul (the machine's practical peak), best over
    `seconds`."""
    n = 2048 if device.type == "cpu" else 8192
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 rate, whatever mode ran last
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or best == 0.0:
        _sync(device)
        t = CLOCK()
        (a @ b).sum().item()
        _sync(device)
        best = max(best, 2 * n**3 / (CLOCK() - t))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Case:
    """One model on one input shape, ready to run timed Adam steps."""

    def __init__(
        self, name: str, dataset: str, k: int | None, batch: int, device: torch.device,
        mode: str,
    ) -> None:
        torch.manual_seed(0)
        cfg = {"name": name, **model_defaults(dataset)}
        if k is not None:
            cfg["num_ipe"] = k
        self.model = models.build_model(models.ModelConfig.from_dict(cfg)).to(device)
        self.model.set_channels_last(mode != "nchw")
        # FLOPs counted on torch's deconv in every mode (see below)
        models._fastconv.set_fast_deconv(self.model, False)
        self.bf16, self.device, self.batch = mode in ("bf16", "bf16-ref"), device, batch
        self.tf32 = mode == "tf32"
        self.opt = torch.optim.Adam(models.param_groups(self.model, 4e-4, 4e-4, 0.0))
        self.adversaries = self.model.build_adversaries()  # Factor-VAE: its discriminator's Adam
        c = self.model.cfg.image_channels
        x = torch.rand(batch, c, 64, 64, device=device)
        self.x = (x > 0.5).float() if c == 1 else x
        with FlopCounterMode(display=False) as counter:
            self.step()
        self.flops = float(counter.get_total_flops())  # per training step
        # the phase path computes about 12% more (its 2x2 convolutions' padded border): the rates
        # below count the same work in every mode
        models._fastconv.set_fast_deconv(self.model, mode not in ("nchw", "fp32-ref", "bf16-ref"))
        self.step()  # warm-up
        self.best = 0.0  # images per second, best of the timed rounds

    def step(self) -> None:
        torch.backends.cuda.matmul.allow_tf32 = self.tf32  # global flags: set per case
        torch.backends.cudnn.allow_tf32 = self.tf32
        self.opt.zero_grad(set_to_none=True)
        with _autocast(self.device, self.bf16):
            out = self.model(self.x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.adversaries.step(out)

    def run(self, steps: int) -> None:
        _sync(self.device)
        t = CLOCK()
        for _ in range(steps):
            self.step()
        _sync(self.device)
        self.best = max(self.best, self.batch * steps / (CLOCK() - t))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--models", nargs="+", default=None,
        help="default: mipet_vae mipet_betatcvae mipet_commutative (with --zoo: the zoo)",
    )
    p.add_argument("--datasets", nargs="+", default=["dsprites", "shapes3d"])
    p.add_argument(
        "--k", nargs="+", type=int, default=[1, 3, 5],
        help="K values (the commutative model: 1 only, unless --k-commutative)",
    )
    p.add_argument(
        "--k-commutative", action="store_true", help="also sweep K for the commutative model"
    )
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the best round counts")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--modes", nargs="+", default=["fp32"],
                   choices=["fp32", "nchw", "tf32", "bf16", "fp32-ref", "bf16-ref"])
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall",
        help="cpu: rates per CPU-second of this process (per core; robust when the machine is "
        "shared; CPU only)",
    )
    p.add_argument(
        "--zoo", action="store_true",
        help="the objective zoo instead: each objective without (K = 0) and with MIPET (K = 3) "
        "on dSprites, fp32 and bf16",
    )
    args = p.parse_args()
    if args.models is None:
        args.models = ZOO if args.zoo else ["mipet_vae", "mipet_betatcvae", "mipet_commutative"]
    if args.zoo:
        args.datasets, args.k, args.modes = ["dsprites"], [3], ["fp32", "bf16"]
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    device = torch.device(args.device)
    rate = 0.0
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"best of {args.rounds} rounds of {args.steps} steps per row, {args.clock} clock")
    rows = []
    for name in args.models:
        ks: list[int | None] = list(args.k)
        if "commutative" in name and not args.k_commutative:
            ks = [1]
        if models.MODELS[name].default_num_ipe == 0:
            ks = [None]
        for dataset in args.datasets:
            for k in ks:
                cases = [Case(name, dataset, k, args.batch, device, m) for m in args.modes]
                for _ in range(args.rounds):  # interleaved, so that load changes hit all modes
                    rate = max(rate, matmul_rate(device, seconds=0.3))
                    for case in cases:
                        case.run(args.steps)
                for mode, case in zip(args.modes, cases, strict=True):
                    rows.append((name, dataset, k or 0, mode, case.best, case.flops))
                    del case.model, case.opt
    print(f"fp32 matmul rate (best seen): {rate / 1e9:.1f} GFLOP/s")
    print(f"{'model':18} {'dataset':9} {'K':>2} {'mode':8} {'img/s':>8} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>8} {'of fp32 mm':>10} {'x nchw':>6}")
    base = {(n, d, k): ips for n, d, k, mode, ips, _ in rows if mode == "nchw"}
    for name, dataset, k, mode, ips, flops in rows:
        achieved = flops * ips / args.batch
        ref = base.get((name, dataset, k))
        print(
            f"{name:18} {dataset:9} {k:>2} {mode:8} {ips:8.1f} {flops / 1e9:10.2f} "
            f"{achieved / 1e9:8.1f} {achieved / rate:10.1%} "
            + (f"{ips / ref:6.2f}" if ref else f"{'':6}")
        )


if __name__ == "__main__":
    main()
