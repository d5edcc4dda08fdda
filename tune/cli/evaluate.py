"""`mipet-tune evaluate`: score a trained model again, under another protocol or on other data.

A target is one of
- a run folder of `mipet-tune train` (its newest readable checkpoint, chosen as `train --resume`
  chooses it: `tune.train.run_checkpoint.choose_checkpoint`) or one of its checkpoint folders;
- a trial of a sweep (`SWEEP --trial ID`): each seed's last checkpoint in the trial's Ray
  folder;
- the best configurations of a sweep (`SWEEP --top K`, by the sweep's own metric, as `rank`
  orders them): every seed of each.

Each checkpoint's model is rebuilt from the run config it holds, its weights loaded, and its
encoder scored with `--protocol` (default dlib: the full disentanglement_lib budgets) on the run's
own dataset or on `--data NAME [--source PATH]` (a transfer: the image shapes must agree). The
metric seed is the run's own (the one its final evaluation used, so the same protocol gives the
same values) unless `--seed` is given. Beside each value is the noise floor: the same model
untrained (`tune.sweep.floor.evaluate_untrained`), evaluated the same way, once per model,
dataset and protocol, and cached.

What it writes: `eval_<protocol>.json` (`eval_<protocol>_<data>.json` for a transfer) in the
checkpoint folder, atomically; for a sweep also the `final/<metric>` columns of the runs it
scored in `trials.parquet` (`analysis.final.add_final_columns`) and the floor cache
`final_floor.json` in the sweep folder. The Optuna study is not touched. Bad input (an unknown
trial id, `--top` larger than the sweep, a sweep without finished trials, a checkpoint of
another config version, a folder that is none of the above, a transfer between image shapes)
is one line, exit 2, before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from models.errors import ConfigError
from tune.cli.eval_targets import EvalTarget, find_targets
from tune.config.run import RunConfig

log = logging.getLogger(__name__)

__all__ = ["EvalTarget", "evaluate_checkpoint", "evaluate_command", "find_targets"]

PROTOCOLS = ("dlib", "fast", "mipet")
FLOOR_CACHE = "final_floor.json"  # a sweep's cache of untrained-model evaluations


@dataclass
class Settings:
    """What `evaluate` was asked for (None: the default)."""

    protocol: str = "dlib"
    metrics: tuple[str, ...] = ()
    seed: int | None = None
    data: str | None = None
    source: str | None = None
    precision: str | None = None
    device: str = "auto"
    floor_memo: dict[str, dict[str, float]] = field(default_factory=dict)


# ---- one checkpoint -------------------------------------------------------------------------
def _load(target: EvalTarget) -> tuple[RunConfig, dict[str, Any]]:
    """The run config a checkpoint holds and its state (refusing another config version)."""
    from analysis.trials import config_hash
    from tune.train.checkpoint import load_state

    state = load_state(target.checkpoint, verify=True)
    saved = state.get("config")
    if not isinstance(saved, dict) or "model" not in state:
        raise ConfigError(f"{target.checkpoint}: not a checkpoint of a mipet-tune run (no run "
                          "config or model weights in it)")
    if target.config_id is not None and config_hash(saved) != target.config_id:
        raise ConfigError(
            f"{target.checkpoint}: checkpoint of another configuration or config version: its "
            f"config hashes to {config_hash(saved)}, its run recorded {target.config_id}")
    try:
        cfg = RunConfig.from_dict(saved)
    except ConfigError as exc:
        raise ConfigError(f"{target.checkpoint}: checkpoint of another mipet-tune config "
                          f"version, this one cannot read its config: {exc}") from None
    return cfg, state


def _eval_config(cfg: RunConfig, s: Settings) -> RunConfig:
    """The run config the evaluation uses: the run's, with the asked protocol, metrics,
    precision, device and data."""
    d = cfg.to_dict()
    if s.data is not None:
        d["data"] = {"name": s.data, "source": s.source, "cache_dir": cfg.data.cache_dir}
    elif s.source is not None:
        d["data"] = {**d["data"], "source": s.source}
    d["eval"] = {**d["eval"], "protocol": s.protocol, "metrics": list(s.metrics)}
    if s.precision is not None:
        d["eval"]["precision"] = s.precision
    d["train"] = {**d["train"], "device": s.device}
    try:
        return RunConfig.from_dict(d)
    except ConfigError as exc:
        if cfg.model.condition_on and s.data is not None:
            raise ConfigError(
                f"--data {s.data}: the model is conditional on "
                f"{', '.join(cfg.model.condition_on)}, which {s.data} must have as factors: "
                f"{exc}") from None
        raise


def _check_shape(cfg: RunConfig, ecfg: RunConfig, data: Any) -> None:
    """Refuse a transfer to images of another shape, naming both."""
    from tune.data._registry import info_for

    trained = tuple(info_for(cfg.data.name).observation_shape[:2]) + (cfg.model.image_channels,)
    given = tuple(int(v) for v in data.observation_shape)
    if trained != given:
        raise ConfigError(
            f"--data {ecfg.data.name}: its images are {'x'.join(map(str, given))}, the model was "
            f"trained on {cfg.data.name} images of {'x'.join(map(str, trained))}; a model scores "
            "only images of the shape it was trained on")


def evaluate_checkpoint(target: EvalTarget, settings: Settings) -> dict[str, Any]:
    """Score one checkpoint; returns the record `eval_<protocol>.json` holds (written by the
    caller). See the module's docstring."""
    from models import build_model
    from tune.train.evaluation import evaluate_model
    from tune.train.loop import load_data, model_config_for, pick_device, seed_streams

    cfg, state = _load(target)
    ecfg = _eval_config(cfg, settings)
    t0 = time.perf_counter()
    data = load_data(ecfg)
    _check_shape(cfg, ecfg, data)
    mcfg = model_config_for(ecfg, data)  # conditioned factors checked against the data
    device = pick_device(ecfg.train.device)
    model = build_model(mcfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"{target.checkpoint}: checkpoint of another mipet-tune version: its "
                          f"weights do not fit the model built from its config "
                          f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    model.to(device)
    seed = settings.seed if settings.seed is not None else seed_streams(cfg.seed)[2]
    values = evaluate_model(model, data, ecfg, device, protocol=ecfg.eval.protocol,
                            metrics=ecfg.eval.metrics or None, seed=seed)
    seconds = time.perf_counter() - t0
    floor, floor_cached = _floor(ecfg, data, target, settings)
    record = {
        "protocol": ecfg.eval.protocol,
        "metrics_asked": list(ecfg.eval.metrics),
        "budgets": _budgets(ecfg.eval.protocol, values),
        "seed": int(seed),
        "data": {"name": ecfg.data.name, "source": ecfg.data.source},
        "trained_on": {"name": cfg.data.name, "source": cfg.data.source},
        "precision": ecfg.eval.precision,
        "representation": ecfg.eval.representation,
        "device": str(device),
        "version": _version(),
        "checkpoint": str(target.checkpoint),
        "step": int(state.get("step", 0)),
        "model": cfg.model.name,
        "config_id": cfg.config_id(),
        "run_seed": cfg.seed,
        "trial_id": target.trial_id,
        "metrics": {k: _json_number(v) for k, v in values.items()},
        "floor": {"key": _floor_key(ecfg), "metrics": floor, "cached": floor_cached},
        "x_floor": {k: _json_number(_ratio(v, floor.get(k), k)) for k, v in values.items()},
        "seconds": round(seconds, 2),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return record


def eval_file(checkpoint: Path, cfg_data: str, protocol: str, trained_on: str) -> Path:
    """`eval_<protocol>.json` in the checkpoint folder; `eval_<protocol>_<data>.json` for
    another dataset than the run's."""
    suffix = "" if cfg_data == trained_on else f"_{cfg_data}"
    return checkpoint / f"eval_{protocol}{suffix}.json"


def _budgets(protocol: str, values: dict[str, float]) -> dict[str, Any]:
    from analysis.metrics.registry import registered

    out = {}
    for rec in registered():
        if rec.group or not set(rec.keys) & set(values):
            continue
        try:
            out[rec.name] = json.loads(json.dumps(rec.budget(protocol), default=str))
        except Exception:  # a metric not run under this protocol: no budget to record
            continue
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mipet-tune")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _json_number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _ratio(value: float, floor: float | None, key: str) -> float | None:
    """value / floor for a higher-is-better key whose floor is above 0 (else None)."""
    from analysis.metrics.registry import direction_of

    if floor is None or direction_of(key) != "max" or not floor > 0:
        return None
    return float(value) / float(floor)


# ---- the noise floor --------------------------------------------------------------------------
def _floor_key(ecfg: RunConfig) -> str:
    e = ecfg.eval
    return json.dumps({"model": ecfg.model.name, "data": ecfg.data.name,
                       "source": ecfg.data.source, "protocol": e.protocol,
                       "metrics": list(e.metrics), "precision": e.precision,
                       "representation": e.representation}, sort_keys=True)


def _floor(ecfg: RunConfig, data: Any, target: EvalTarget,
           settings: Settings) -> tuple[dict[str, float | None], bool]:
    """The untrained model's metrics for this model, dataset and protocol: from this run's
    cache (memory, the sweep's `final_floor.json`, an earlier `eval_*.json` of this
    checkpoint), else computed once (`evaluate_untrained`) and remembered."""
    from tune.sweep.floor import evaluate_untrained

    key = _floor_key(ecfg)
    if key in settings.floor_memo:
        return settings.floor_memo[key], True
    for cached in _cached_floors(target):
        if key in cached:
            settings.floor_memo[key] = cached[key]
            return cached[key], True
    t0 = time.perf_counter()
    floor = {k: _json_number(v) for k, v in evaluate_untrained(ecfg, data=data).items()}
    log.info("noise floor of %s on %s (%s protocol): %.1f s", ecfg.model.name,
             ecfg.data.name, ecfg.eval.protocol, time.perf_counter() - t0)
    settings.floor_memo[key] = floor
    return floor, False


def _cached_floors(target: EvalTarget) -> list[dict[str, dict[str, float]]]:
    out = []
    files = list(target.checkpoint.glob("eval_*.json"))
    if target.sweep is not None:
        files.insert(0, target.sweep / FLOOR_CACHE)
    for path in files:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if path.name == FLOOR_CACHE and isinstance(loaded, dict):
            out.append({k: v for k, v in loaded.items() if isinstance(v, dict)})
        elif isinstance(loaded, dict) and isinstance(loaded.get("floor"), dict):
            f = loaded["floor"]
            if isinstance(f.get("key"), str) and isinstance(f.get("metrics"), dict):
                out.append({f["key"]: f["metrics"]})
    return out


def _write_sweep_floor(sweep: Path, memo: dict[str, dict[str, float]]) -> None:
    from analysis._files import atomic_write

    path = sweep / FLOOR_CACHE
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    merged = {**(old if isinstance(old, dict) else {}), **memo}
    atomic_write(path, lambda fh: fh.write(json.dumps(merged, indent=1, sort_keys=True)),
                 mode="w")


# ---- the command ------------------------------------------------------------------------------
def evaluate_command(target: str | Path, *, trial: str | None = None, top: int | None = None,
                     protocol: str = "dlib", metrics: Sequence[str] = (),
                     seed: int | None = None, data: str | None = None,
                     source: str | None = None, precision: str | None = None,
                     device: str = "auto") -> str:
    """`mipet-tune evaluate`: score the target's checkpoints, write the results, and return
    the text for stdout (per checkpoint: each metric's value, floor and x floor).

    Raises:
        ConfigError, DataFileError: bad input (see the module's docstring), before anything
            is written.
    """
    from analysis._files import atomic_write
    from tune.config.run import EvalConfig

    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: give one of {', '.join(PROTOCOLS)}")
    if source is not None and data is None:
        raise ConfigError("--source names the file of --data NAME; give --data too")
    EvalConfig(protocol=protocol, metrics=tuple(metrics))  # unknown metric names: one line
    settings = Settings(protocol=protocol, metrics=tuple(metrics), seed=seed, data=data,
                        source=source, precision=precision, device=device)
    targets = find_targets(target, trial=trial, top=top)
    for t in targets:  # every checkpoint readable and of this version before any evaluation
        _load(t)
    records = []
    for t in targets:
        record = evaluate_checkpoint(t, settings)
        records.append((t, record))
    lines = []
    for t, record in records:
        path = eval_file(t.checkpoint, record["data"]["name"], record["protocol"],
                         record["trained_on"]["name"])
        atomic_write(path, lambda fh, r=record: fh.write(json.dumps(r, indent=1)), mode="w")
        lines.append(_record_text(t, record, path))
    sweeps = {t.sweep for t, _ in records if t.sweep is not None}
    for sweep in sweeps:
        from analysis.final import add_final_columns

        results = {(t.trial_id, t.seed): r["metrics"] for t, r in records if t.sweep == sweep}
        table = add_final_columns(sweep, results, protocol=protocol)
        _write_sweep_floor(sweep, settings.floor_memo)
        lines.append(f"{table}: final/ columns of {len(results)} run"
                     f"{'s' * (len(results) != 1)} ({protocol} protocol); rank by them with "
                     f"mipet-tune rank {sweep} --by final/<metric>")
    return "\n\n".join(lines)


def _record_text(t: EvalTarget, r: dict[str, Any], path: Path) -> str:
    who = (f"trial {t.trial_id} seed {t.seed}" if t.trial_id
           else f"{r['model']} seed {r['run_seed']}")
    data = r["data"]["name"] + (f" ({r['data']['source']})" if r["data"]["source"] else "")
    if r["data"]["name"] != r["trained_on"]["name"]:
        data += f", trained on {r['trained_on']['name']}"
    head = [f"{who}: {t.checkpoint} (step {r['step']})",
            f"{r['protocol']} protocol on {data}, {r['precision']}, metric seed {r['seed']}, "
            f"{r['seconds']:.1f} s" + (", floor cached" if r["floor"]["cached"] else "")]
    width = max([len("metric")] + [len(k) for k in r["metrics"]])
    rows = [f"  {'metric':<{width}s} {'value':>9s} {'floor':>9s} {'x floor':>8s}"]
    for key, value in r["metrics"].items():
        floor = r["floor"]["metrics"].get(key)
        ratio = r["x_floor"].get(key)
        rows.append(f"  {key:<{width}s} {_fmt(value):>9s} {_fmt(floor):>9s} "
                    f"{(f'{ratio:.1f}x' if ratio is not None else '-'):>8s}")
    return "\n".join(head + rows + [f"  written: {path}"])


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
