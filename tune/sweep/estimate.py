"""`mipet-tune ablate --config FILE --dry-run` and `mipet-tune sweep --dry-run`: the cells, the
trial count, the noise-floor evaluations and the GPU time an ablation grid or a sweep would take,
without running it.

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


class _Rates:
    """Images per second per config: from `--throughput`, else measured here once per model
    shape (name, channels, IPE count, batch, precision), with the source of each figure."""

    def __init__(self, throughput: Sequence[str]) -> None:
        self.given = parse_throughput(throughput)
        self.measured: dict[tuple, tuple[float, str]] = {}
        self.sources: set[str] = set()

    def __call__(self, cfg: RunConfig) -> tuple[float, str]:
        rate = _rate_for(cfg, self.given)
        source = "--throughput"
        if rate is None:
            key = _shape(cfg)
            if key not in self.measured:
                self.measured[key] = measure(cfg)
            rate, device = self.measured[key]
            source = f"measured here on {device}"
        self.sources.add(source)
        return rate, source


def _shape(cfg: RunConfig) -> tuple:
    """What a training step's speed depends on (the measured figure is shared by equal ones)."""
    return (cfg.model.name, cfg.model.image_channels, cfg.model.num_ipe, cfg.train.batch_size,
            cfg.train.precision)


def _table(rows: Sequence[tuple[str, float, RunConfig]], rates: _Rates,
           head: tuple[str, str]) -> tuple[list[str], list[float], float]:
    """The estimate's table: one line per (label, trials, config), each row's seconds per
    trial and the total seconds. `head` names the first two columns; a fractional count is
    shown with one decimal."""
    lines = [f"| {head[0]} | {head[1]} | steps x batch | img/s | hours per trial | source |",
             "|---|---|---|---|---|---|"]
    seconds, total = [], 0.0
    for label, trials, cfg in rows:
        rate, source = rates(cfg)
        seconds.append(cfg.train.steps * cfg.train.batch_size / rate)
        total += seconds[-1] * trials
        shown = f"{trials:g}" if float(trials).is_integer() else f"{trials:.1f}"
        lines.append(f"| {label} | {shown} | {cfg.train.steps} x {cfg.train.batch_size} | "
                     f"{rate:,.0f} | {seconds[-1] / 3600:.2f} | {source} |")
    return lines, seconds, total


def _floor_line(configs: Sequence[RunConfig]) -> str:
    """How many untrained models the run evaluates afterwards for its noise floor."""
    from tune.sweep.floor import FLOOR_SEEDS, floor_configs

    pairs = [c for c in floor_configs(configs) if c.eval.protocol != "none"]
    return (f"noise floor: {len(pairs)} model and dataset pairs x {FLOOR_SEEDS} seeds = up to "
            f"{len(pairs) * FLOOR_SEEDS} evaluations of untrained models (after the trials; "
            "not in the estimate below)")


def _closing(total_s: float, resources: Any, rates: _Rates,
             extra: Sequence[str] = ()) -> list[str]:
    """The total (and `extra` lines about it), and what it does not say (GPU packing, a
    CPU-measured figure)."""
    lines = ["", f"estimated training time: {_hours(total_s)} device-hours "
             f"(one trial alone on a device; training steps only, not the evaluation at the "
             f"end).", *extra]
    per_gpu = 1 / resources.gpu if resources.gpu else 0
    if per_gpu > 1:
        lines.append(f"resources gpu={resources.gpu:g} packs {per_gpu:g} trials per GPU; "
                     "the wall time then depends on how well they share it "
                     "(benchmarks/load.py --gpu-share measures it).")
    if any(s.startswith("measured here on cpu") for s in rates.sources):
        lines.append("The rates were measured on this machine's CPU, not a GPU: on a GPU this "
                     "runs much faster. Run the dry run on the GPU machine, or pass "
                     "--throughput MODEL=IMAGES_PER_S with figures from benchmarks/gpu_check.sh.")
    return lines


def _hours(seconds: float) -> str:
    """Hours with one decimal, or two below one hour (a short sweep is not "0.0")."""
    hours = seconds / 3600
    return f"{hours:.1f}" if hours >= 1 else f"{hours:.2f}"


def dry_run_text(spec: Any, throughput: Sequence[str] = ()) -> str:
    """What `ablate --dry-run` prints: one line per cell, the totals and where the rates are
    from."""
    configs = spec.configs()  # every cell validated, as a real run would
    cells: dict[str, list[RunConfig]] = {}
    for cfg in configs:
        cells.setdefault(cfg.config_id(), []).append(cfg)
    rates = _Rates(throughput)
    rows = [(_cell_name(spec, group[0]), len(group), group[0]) for group in cells.values()]
    table, _, total_s = _table(rows, rates, ("cell", "trials"))
    return "\n".join([f"{spec.name}: {len(cells)} cells x {spec.seeds} seeds = {len(configs)} "
                      "trials", _floor_line(configs), "", *table,
                      *_closing(total_s, spec.resources, rates)])


def sweep_dry_run_text(spec: Any, throughput: Sequence[str] = ()) -> str:
    """What `sweep --dry-run` prints: the trial count, the noise-floor evaluations and the
    device-hours, from the space's corners (each range's low and high, each choice).

    Which configurations the searcher picks is not known before it runs, so the estimate
    assumes each model (and data set) the space can pick is picked equally often, and each
    corner of its ranges likewise; the fastest and the slowest corner bound it. Nothing is
    written and no Ray trial starts: only the checks a real sweep makes before Ray.
    """
    from tune.sweep.driver import prepare
    from tune.sweep.floor import sweep_configs

    base, space = prepare(spec)  # the spec, the space and every corner validated
    configs = sweep_configs(spec, base, space)
    # sweep_configs returns the base itself first (when the space can pick its model), then
    # one config per corner of the space: the corners are what trials look like.
    corners = [c for c in configs if c is not base] or configs
    picks: dict[tuple[str, str], list[RunConfig]] = {}
    for cfg in corners:
        picks.setdefault((cfg.data.name, cfg.model.name), []).append(cfg)
    n_trials = spec.num_samples * spec.seeds
    shares: dict[tuple, tuple[str, float, RunConfig]] = {}
    for group in picks.values():
        for cfg in group:
            key = (cfg.data.name, *_shape(cfg), cfg.train.steps)
            label, share, _ = shares.get(key, (_sweep_label(cfg), 0.0, cfg))
            shares[key] = (label, share + n_trials / len(picks) / len(group), cfg)
    rows = list(shares.values())
    rates = _Rates(throughput)
    table, seconds, total_s = _table(rows, rates, ("model", "expected trials"))
    notes = ["", "expected trials: each model the space can pick taken equally often, and each "
             "corner of its ranges (low, high, each choice) likewise."]
    extra = [f"every trial at the fastest corner: {_hours(min(seconds) * n_trials)}; at the "
             f"slowest: {_hours(max(seconds) * n_trials)} device-hours."]
    if spec.scheduler.kind == "asha":
        extra.append(f"scheduler {spec.scheduler.kind} stops some trials early: the time is an "
                     "upper bound.")
    return "\n".join([f"{spec.name}: {spec.num_samples} configurations x {spec.seeds} seeds = "
                      f"{n_trials} trials", _floor_line(configs), "", *table, *notes,
                      *_closing(total_s, spec.resources, rates, extra)])


def _sweep_label(cfg: RunConfig) -> str:
    """A sweep row: its dataset and model, and the IPE count and precision it is timed with."""
    shown = [f"{cfg.data.name} {cfg.model.name}"]
    if cfg.model.num_ipe:
        shown.append(f"num_ipe={cfg.model.num_ipe}")
    if cfg.train.precision != "fp32":
        shown.append(cfg.train.precision)
    return ", ".join(shown)


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
