"""The noise floor of a sweep: its untrained models, evaluated like its trials.

Once per model and dataset a sweep (or ablation grid) uses, the model is built exactly as its
first trial builds it (the same run config, seed and init stream, so the same step-0 weights), not
trained, and evaluated with the trials' protocol and metrics; and likewise at the two seeds after
that one, for the floor's own seed spread; those untrained models, as one group, give the floor
of UDR (`eval/udr_lasso`, `eval/udr_a2a`, ...: each model's score in its row). The rows go to
`floor.parquet` in the sweep folder (`analysis.floor` reads them and holds the rule for "clearly
above the floor").

No Ray here: the driver calls `write_floor` in its own process, after the trials (so the floor
never delays them), and a failure to compute it is logged, never fatal to the sweep.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable

from models.errors import ConfigError
from tune.config.run import UDR_DEFAULT, RunConfig

log = logging.getLogger(__name__)

# Seeds per floor: one untrained model's metrics move by as much as their own size from seed to
# seed (MIG 0.001 to 0.008 on dSprites), so the floor needs a spread of its own.
FLOOR_SEEDS = 3


def untrained_model(cfg: RunConfig, data: Any):
    """`cfg`'s model at step 0, built as `run_training` builds it (same init stream, so the
    same weights as the trial's first step), and its device."""
    import torch

    from models import build_model
    from tune.train.loop import model_config_for, pick_device, seed_streams

    init_seed = seed_streams(cfg.seed)[0]
    device = pick_device(cfg.train.device)
    mcfg = model_config_for(cfg, data)
    torch.manual_seed(init_seed)
    return build_model(mcfg).to(device), device


def evaluate_untrained(cfg: RunConfig, *, data: Any = None) -> dict[str, float]:
    """The metrics of `cfg`'s model at step 0 with `cfg.eval`'s protocol and metrics, as the
    trial's final evaluation computes them. Returns {} for `eval.protocol: none`."""
    from tune.train.loop import load_data

    if cfg.eval.protocol == "none":
        return {}
    data = data if data is not None else load_data(cfg)
    model, device = untrained_model(cfg, data)
    return _evaluate(model, data, cfg, device)


def _evaluate(model, data: Any, cfg: RunConfig, device) -> dict[str, float]:
    from tune.train.loop import evaluate_model, seed_streams

    return evaluate_model(model, data, cfg, device, protocol=cfg.eval.protocol,
                          metrics=cfg.eval.metrics or None, seed=seed_streams(cfg.seed)[2])


def _probe(model, data: Any, device) -> str:
    """A fingerprint of the encoder: its codes of 16 fixed images."""
    import hashlib

    import numpy as np

    from tune.train.loop import Encoder

    images = data.images_at(np.arange(min(16, len(data))))
    mu = Encoder(model, device)(images)
    return hashlib.sha1(np.ascontiguousarray(mu, dtype=np.float32).tobytes()).hexdigest()


def floor_configs(configs: Iterable[RunConfig]) -> list[RunConfig]:
    """The first config of each (model, dataset) pair, in order."""
    seen: dict[tuple[str, str], RunConfig] = {}
    for cfg in configs:
        seen.setdefault((cfg.model.name, cfg.data.name), cfg)
    return list(seen.values())


def floor_table(configs: Iterable[RunConfig], *, seeds: int | None = None):
    """The floor rows (see `analysis.floor`) of each (model, dataset) pair in `configs`, at the
    pair's first seed and the `seeds - 1` after it (`FLOOR_SEEDS` unless given).

    Models whose encoders start identical (the same probe codes: the baselines and their MIPET
    versions share the encoder and its init stream) are evaluated once and their rows copied.
    """
    import pandas as pd

    from analysis.floor import floor_rows

    seeds = FLOOR_SEEDS if seeds is None else seeds
    rows = []
    datasets: dict[tuple, Any] = {}
    done: dict[tuple, dict[str, float]] = {}
    for first in floor_configs(configs):
        if first.eval.protocol == "none":
            continue
        key = (first.data.name, first.data.source, first.data.cache_dir)
        if key not in datasets:
            from tune.train.loop import load_data

            datasets[key] = load_data(first)
        untrained = []
        for cfg in (first.replace(seed=first.seed + i) for i in range(seeds)):
            t0 = time.perf_counter()
            model, device = untrained_model(cfg, datasets[key])
            untrained.append(model)
            same = (key, repr(cfg.eval), cfg.seed, _probe(model, datasets[key], device))
            if same not in done:
                done[same] = _evaluate(model, datasets[key], cfg, device)
            metrics = done[same]
            rows.append(floor_rows(cfg.model.name, cfg.data.name, cfg.seed, cfg.eval.protocol,
                                   metrics))
            log.info("noise floor of %s on %s (seed %d): %s in %.1f s", cfg.model.name,
                     cfg.data.name, cfg.seed, _short(metrics), time.perf_counter() - t0)
        _udr_floor(first, untrained, datasets[key], device, rows[-len(untrained):])
    return pd.DataFrame(rows)


def _udr_floor(first: RunConfig, models: list, data: Any, device, rows: list[dict]) -> None:
    """The floor of `eval/udr*`: the UDR of the floor's untrained models (its seeds) as one
    group, each model's score in its row (in place); nothing with fewer than two seeds.

    An untrained model's latents usually all have a mean KL below UDR's 0.01 (its codes carry
    next to no information), so no latent is kept and its UDR is undefined (NaN; dlib crashes
    there): the floor records 0 then, the score of a model without an agreeing latent."""
    from tune.sweep.udr import group_scores, trial_udr_metrics
    from tune.train.loop import seed_streams

    names = trial_udr_metrics(first, len(models))
    if not names or any(getattr(m, "needs_labels", False) for m in models):
        return
    try:
        scores = group_scores(models, data, first.eval.protocol, device, names,
                              seed=seed_streams(first.seed)[2])
    except Exception as exc:  # the other floor metrics stand
        log.warning("the UDR floor of %s could not be computed: %s", first.model.name, exc)
        return
    for row, extra in zip(rows, scores, strict=True):
        row.update({f"eval/{n}": extra.get(f"eval/{n}", 0.0) for n in names})
        # the all-to-all UDR of the floor's models is the same group's lasso score
        row["eval/udr_a2a"] = row[f"eval/{UDR_DEFAULT}"]


def write_floor(folder: str | Path, configs: Iterable[RunConfig]) -> Path | None:
    """Evaluate the floor of `configs` and write `<folder>/floor.parquet` (atomically).

    Pairs already in an existing floor file (a resumed sweep) are not evaluated again. Never
    raises: a floor that cannot be computed is logged and the sweep goes on without it.
    """
    import pandas as pd

    from analysis.floor import FLOOR_FILE, KEY_COLUMNS, load_floor
    from tune.train.checkpoint import atomic_write

    folder = Path(folder)
    try:
        old = load_floor(folder)
        done = set() if old is None else set(map(tuple, old[list(KEY_COLUMNS)].to_numpy()))
        todo = [c for c in floor_configs(configs) if (c.model.name, c.data.name) not in done]
        if not todo:
            return folder / FLOOR_FILE if old is not None else None
        new = floor_table(todo)
        if new.empty:
            return None
        table = new if old is None else pd.concat([old, new], ignore_index=True)
        return atomic_write(folder / FLOOR_FILE, lambda fh: table.to_parquet(fh, index=False))
    except Exception as exc:  # the trials are what matters; the floor is a reference
        log.warning("the noise floor could not be computed: %s", exc)
        return None


def sweep_configs(spec: Any, base: RunConfig, space: Any) -> list[RunConfig]:
    """One run config per model a sweep's space can pick, with the sweep's base applied as a
    trial gets it (fixed values, then `base`, then the searched ones)."""
    from analysis.trials import flatten

    user = flatten(spec.base)
    fixed = set(space.fixed_dict())
    out = [base]
    for corner in space.corners():
        merged = {k: v for k, v in corner.items() if k in fixed}
        merged.update(user)
        merged.update({k: v for k, v in corner.items() if k not in fixed})
        try:
            out.append(spec.run_config(merged))
        except ConfigError:  # validated at load time; a corner that fails is no trial
            continue
    names = {c.model.name for c in out[1:]}
    return [c for c in out if c.model.name in names] if names else out


def write_sweep_floor(folder: str | Path, spec: Any, base: RunConfig, space: Any) -> Path | None:
    """`write_floor` for a sweep: every model its space can pick, at the sweep's first seed."""
    try:
        configs = sweep_configs(spec, base, space)
    except Exception as exc:
        log.warning("the noise floor could not be computed: %s", exc)
        return None
    return write_floor(folder, configs)


def _short(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in metrics.items())
