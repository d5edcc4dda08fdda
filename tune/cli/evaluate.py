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
from tune.config.run import RunConfig

log = logging.getLogger(__name__)

__all__ = ["EvalTarget", "evaluate_checkpoint", "evaluate_command", "find_targets"]

PROTOCOLS = ("dlib", "fast", "mipet")
FLOOR_CACHE = "final_floor.json"  # a sweep's cache of untrained-model evaluations


@dataclass(frozen=True)
class EvalTarget:
    """One checkpoint to score, and where it came from.

    `config_id`: the id its run recorded (a sweep's row, a run's result.yaml), checked against
    the checkpoint's own config; None when nothing recorded one."""

    checkpoint: Path
    trial_id: str | None = None
    seed: int | None = None
    config_id: str | None = None
    sweep: Path | None = None


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


# ---- which checkpoints ----------------------------------------------------------------------
def find_targets(target: str | Path, *, trial: str | None = None,
                 top: int | None = None) -> list[EvalTarget]:
    """The checkpoints `evaluate TARGET [--trial ID | --top K]` scores (reads only).

    Raises:
        ConfigError: not a run, checkpoint or sweep folder; a sweep without --trial/--top (or
            a run with them); an unknown trial id; --top larger than the sweep; a sweep or
            trial without finished runs; a run without a checkpoint.
        DataFileError: a run folder without a readable checkpoint.
    """
    from tune.train.command import CHECKPOINTS, RESULT_FILE
    from tune.train.run_checkpoint import STATE_FILE, checkpoints_in, choose_checkpoint

    path = Path(target).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{target}: no such folder; give a run folder of mipet-tune train, "
                          "one of its checkpoint folders, or a sweep folder")
    path = path.resolve()
    if _is_sweep(path):
        if (trial is None) == (top is None):
            raise ConfigError(f"{target} is a sweep folder: give --trial ID (one trial) or "
                              "--top K (its K best configurations)")
        return _sweep_targets(path, trial=trial, top=top)
    if trial is not None or top is not None:
        raise ConfigError(f"{target}: --trial and --top take a sweep folder (with "
                          "trials.parquet or ray/); this is not one")
    if (path / STATE_FILE).is_file():
        _readable(path)
        return [EvalTarget(path, config_id=_recorded_id(path.parent.parent / RESULT_FILE, path))]
    if (path / CHECKPOINTS).is_dir() or (path / "config.yaml").is_file():
        if not checkpoints_in(path / CHECKPOINTS):
            raise ConfigError(f"{target}: the run has no checkpoint yet (it stopped before its "
                              "first); train it to the end, then evaluate it")
        quiet = logging.getLogger("tune.train.run_checkpoint")  # its "resuming from" line
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))  # (its warnings still show)
        try:
            chosen = choose_checkpoint(path / CHECKPOINTS)
        finally:
            quiet.setLevel(level)
        log.info("evaluating %s, the newest readable checkpoint of the run", chosen)
        return [EvalTarget(chosen, config_id=_recorded_id(path / RESULT_FILE, chosen))]
    raise ConfigError(f"{target}: not a run folder of mipet-tune train (no {CHECKPOINTS}/), a "
                      f"checkpoint folder (no {STATE_FILE}) or a sweep folder (no "
                      "trials.parquet or ray/)")


def _is_sweep(path: Path) -> bool:
    return (path / "trials.parquet").is_file() or (path / "ray").is_dir()


def _readable(folder: Path) -> None:
    from tune.errors import DataFileError
    from tune.train.run_checkpoint import inspect

    problem = inspect(folder).problem
    if problem is not None:
        raise DataFileError(f"{folder}: not a readable checkpoint: {problem}")


def _recorded_id(result_file: Path, checkpoint: Path) -> str | None:
    """The config id a run's result.yaml records, if it is the result of this checkpoint's
    step (a run trained longer with --resume has another train/steps, so another id)."""
    import yaml

    from tune.train.run_checkpoint import checkpoint_step

    try:
        loaded = yaml.safe_load(result_file.read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(loaded, dict) or loaded.get("step") != checkpoint_step(checkpoint):
        return None
    value = loaded.get("config_id")
    return str(value) if value else None


def _sweep_targets(folder: Path, *, trial: str | None, top: int | None) -> list[EvalTarget]:
    from analysis import AnalysisError, load_sweep, rank
    from analysis.trials import usable_trials

    df = load_sweep(folder)
    used, _ = usable_trials(df)
    if trial is not None:
        rows = df[df["trial_id"] == str(trial)]
        if rows.empty:
            ids = sorted(set(df["trial_id"].astype(str)))
            known = ", ".join(ids[:8])
            more = f" and {len(ids) - 8} more" if len(ids) > 8 else ""
            raise ConfigError(f"--trial {trial}: no such trial in {folder}; its trials are "
                              f"{known}{more}")
        rows = used[used["trial_id"] == str(trial)]
        if rows.empty:
            status = ", ".join(sorted(set(df.loc[df["trial_id"] == str(trial), "status"])))
            raise ConfigError(f"--trial {trial}: the trial did not finish (status {status}); "
                              "only a finished trial can be evaluated")
    else:
        if used.empty:
            raise ConfigError(f"{folder}: the sweep has no finished trial to evaluate "
                              f"({len(df)} runs, none finished without failing)")
        try:
            ranked = rank(df)
        except AnalysisError as exc:
            raise ConfigError(f"{folder}: cannot rank the sweep for --top: {exc}") from None
        top = int(top or 0)
        if top > len(ranked):
            raise ConfigError(f"--top {top}: the sweep has {len(ranked)} ranked "
                              f"configuration{'s' * (len(ranked) != 1)}; give --top "
                              f"{len(ranked)} or less")
        best = list(ranked["config_id"].head(top))
        rows = used[used["config_id"].isin(best)]
        order = {c: i for i, c in enumerate(best)}
        rows = rows.assign(_order=rows["config_id"].map(order)).sort_values(
            ["_order", "seed", "trial_id"], kind="mergesort")
    out, missing = [], []
    for row in rows.itertuples(index=False):
        seed = None if _missing(row.seed) else int(row.seed)
        try:
            found = _trial_checkpoint(folder, str(row.trial_id), seed, row.checkpoint_path,
                                      row.trial_dir)
        except ConfigError as exc:  # an earlier seed's checkpoint that Ray did not keep
            missing.append(str(exc))
            continue
        out.append(EvalTarget(found, trial_id=str(row.trial_id), seed=seed,
                              config_id=str(row.config_id), sweep=folder))
    if not out:
        raise ConfigError(missing[0] if len(missing) == 1 else
                          f"no checkpoint of the {len(missing)} runs asked for: {missing[0]}")
    for line in missing:
        log.warning("left out: %s", line)
    return out


def _missing(value: Any) -> bool:
    try:
        return value is None or bool(value != value)  # NaN, pd.NA
    except TypeError:
        return True


def _trial_checkpoint(sweep: Path, trial_id: str, seed: int | None, checkpoint_path: Any,
                      trial_dir: Any) -> Path:
    """The newest readable checkpoint of one seed of a trial, in its Ray trial folder (the one
    the table names, else the folder under `ray/` named by the trial id)."""
    from tune.train.run_checkpoint import checkpoint_step, inspect

    dirs: list[Path] = []
    for given in (trial_dir, checkpoint_path and Path(str(checkpoint_path)).parent):
        if given and "://" not in str(given) and Path(str(given)).is_dir():
            dirs.append(Path(str(given)))
    if not dirs and (sweep / "ray").is_dir():
        dirs = [p for p in (sweep / "ray").rglob(f"*{trial_id}*") if p.is_dir()]
    candidates = {c.resolve() for d in dirs for c in d.glob("checkpoint_*")
                  if c.is_dir() and not c.name.startswith(".")}
    mine = [c for c in candidates if seed is None or _checkpoint_seed(c) == seed]
    problems = []
    for c in sorted(mine, key=checkpoint_step, reverse=True):
        problem = inspect(c).problem
        if problem is None:
            return c
        problems.append(f"{c.name}: {problem}")
    what = f"trial {trial_id}" + (f" seed {seed}" if seed is not None else "")
    if problems:
        raise ConfigError(f"{what}: no readable checkpoint ({'; '.join(problems)})")
    where = ", ".join(map(str, dirs)) or f"{sweep / 'ray'} (no folder of this trial)"
    raise ConfigError(f"{what}: no checkpoint of this seed in {where} (Ray keeps "
                      "checkpoints_to_keep per trial; an earlier seed's may be gone)")


def _checkpoint_seed(folder: Path) -> int | None:
    from tune.train.command import folder_config

    seed = (folder_config(folder) or {}).get("seed")
    return seed if isinstance(seed, int) else None


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
