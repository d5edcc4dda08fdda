"""`mipet-tune ablate --config FILE --dry-run`: the cells, the trial count and the GPU time an
ablation grid would take, without running it.

The time is images to train / images per second, per cell, for one trial alone on one device
(training steps only: the evaluation at the end and the data preparation come on top). The images
per second come from `--throughput` (measured figures: `benchmarks/gpu_check.sh` prints them for
a GPU), or, without it, from a few training steps of each cell's model measured here, on this
machine's device; the output names the source, so a CPU figure is never taken for a GPU one.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from models.errors import ConfigError
from tune.config.run import RunConfig

MEASURE_STEPS = 2  # timed training steps per model (after one warm-up step)


def parse_throughput(items: Sequence[str]) -> dict[str, float]:
    """`["3000"]` (every model) or `["mipet_vae=2500", "beta_vae@shapes3d=4000"]` -> a map from
    `"*"`, `model` or `model@dataset` to images per second."""
    out: dict[str, float] = {}
    for item in items:
        key, _, raw = item.rpartition("=")
        try:
            rate = float(raw)
        except ValueError:
            rate = float("nan")
        if not rate > 0:
            raise ConfigError(f"--throughput {item!r}: expected IMAGES_PER_S, MODEL=IMAGES_PER_S "
                              "or MODEL@DATASET=IMAGES_PER_S with a positive number")
        out[key or "*"] = rate
    return out


def _rate_for(cfg: RunConfig, given: dict[str, float]) -> float | None:
    for key in (f"{cfg.model.name}@{cfg.data.name}", cfg.model.name, "*"):
        if key in given:
            return given[key]
    return None


def measure(cfg: RunConfig, *, steps: int = MEASURE_STEPS) -> tuple[float, str]:
    """Images per second of `cfg`'s training step (its model, batch, optimizer and precision) on
    random images here, and the device's name."""
    import dataclasses
    from contextlib import nullcontext

    import torch

    from models import build_model
    from tune.data import model_defaults
    from tune.train.loop import build_optimizer, pick_device

    device = pick_device(cfg.train.device if cfg.train.device != "auto" else "auto")
    size = model_defaults(cfg.data.name, cfg.data.source)["dataset_size"]
    torch.manual_seed(0)
    mcfg = dataclasses.replace(cfg.model, dataset_size=size)
    x = torch.rand(cfg.train.batch_size, cfg.model.image_channels, 64, 64, device=device)
    extra: dict[str, Any] = {}
    if mcfg.condition_on:  # a conditional model: class counts from the factor table
        from tune.data._registry import info_for

        info = info_for(cfg.data.name)
        sizes = [info.factor_sizes[info.factor_names.index(n)] for n in mcfg.condition_on]
        mcfg = mcfg.replace(condition_classes=sizes)
        extra["labels"] = torch.stack(
            [torch.randint(0, k, (len(x),)) for k in sizes], 1
        ).to(device)
    model = build_model(mcfg).to(device)
    optimizer = build_optimizer(cfg, model)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                if cfg.train.precision == "bf16" else nullcontext())

    def step() -> None:
        with autocast:
            loss = model(x, **extra).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return steps * cfg.train.batch_size / (time.perf_counter() - t0), name


def dry_run_text(spec: Any, throughput: Sequence[str] = ()) -> str:
    """What `ablate --dry-run` prints: one line per cell, the totals and where the rates are
    from."""
    configs = spec.configs()  # every cell validated, as a real run would
    given = parse_throughput(throughput)
    cells: dict[str, list[RunConfig]] = {}
    for cfg in configs:
        cells.setdefault(cfg.config_id(), []).append(cfg)
    measured: dict[tuple, tuple[float, str]] = {}
    lines = [f"{spec.name}: {len(cells)} cells x {spec.seeds} seeds = {len(configs)} trials", "",
             "| cell | trials | steps x batch | img/s | hours per trial | source |",
             "|---|---|---|---|---|---|"]
    total_s, sources = 0.0, set()
    for group in cells.values():
        cfg = group[0]
        rate = _rate_for(cfg, given)
        source = "--throughput"
        if rate is None:
            key = (cfg.model.name, cfg.model.image_channels, cfg.model.num_ipe,
                   cfg.train.batch_size, cfg.train.precision)
            if key not in measured:
                measured[key] = measure(cfg)
            rate, device = measured[key]
            source = f"measured here on {device}"
        sources.add(source)
        seconds = cfg.train.steps * cfg.train.batch_size / rate
        total_s += seconds * len(group)
        lines.append(f"| {_cell_name(spec, cfg)} | {len(group)} | {cfg.train.steps} x "
                     f"{cfg.train.batch_size} | {rate:,.0f} | {seconds / 3600:.2f} | {source} |")
    per_gpu = 1 / spec.resources.gpu if spec.resources.gpu else 0
    lines += ["", f"estimated training time: {total_s / 3600:.1f} device-hours "
              f"(one trial alone on a device; training steps only, not the evaluation at the "
              f"end)."]
    if per_gpu > 1:
        lines.append(f"resources gpu={spec.resources.gpu:g} packs {per_gpu:g} trials per GPU; "
                     "the wall time then depends on how well they share it "
                     "(benchmarks/load.py --gpu-share measures it).")
    if any(s.startswith("measured here on cpu") for s in sources):
        lines.append("The rates were measured on this machine's CPU, not a GPU: on a GPU this "
                     "grid runs much faster. Run the dry run on the GPU machine, or pass "
                     "--throughput MODEL=IMAGES_PER_S with figures from benchmarks/gpu_check.sh.")
    return "\n".join(lines)


def _cell_name(spec: Any, cfg: RunConfig) -> str:
    """The cell's dataset and model, and what its variant or grid sets away from the defaults."""
    flat = cfg.flat()
    plain = RunConfig.from_dict({"data": {"name": cfg.data.name},
                                 "model": {"name": cfg.model.name}}).flat()
    keys = sorted({k for v in spec.variants for k in v} | set(spec.grid))
    shown = [f"{cfg.data.name} {cfg.model.name}"]
    shown += [f"{k.removeprefix('model/')}={flat[k]}" for k in keys
              if k in flat and k not in ("data/name", "model/name") and flat[k] != plain.get(k)]
    return ", ".join(shown)
