"""UDR in a sweep: the models of one trial (its seeds) as a group, and every model of a finished
sweep as one (the all-to-all variant of Duan et al., ICLR 2020).

Within a trial (`TrialUDR`): with `seeds >= 2` each seed's final model is kept (its weights in
memory, and as `final_model.pt` in the seed's artifact folder when the sweep folder is local),
and after the last seed the trial scores its S models against each other on one shared sample
(`analysis.metrics.evaluate_group`, the budgets of the run's `eval.protocol`). Each seed's row
gets its own model's score (`eval/udr_lasso`, and `eval/udr_spearman` when `eval.metrics` names
it); the trial's value, what Optuna sees, is their mean (the mean of the seed rows). `udr` names
`udr_lasso` (dlib's default correlation) in `eval.metrics`, in a sweep's `metric: eval/udr` and in
`rank --by udr`.

All-to-all (`all_to_all`, `write_all_to_all`): every finished seed's `final_model.pt` of a sweep,
encoded on one shared sample; each model's score is the median over all the other models of the
sweep, not only its own seeds. It goes into trials.parquet as `eval/udr_a2a`, added by
(trial_id, seed) to the table as it is on disk (no row is dropped or reordered), under the sweep
folder's lock. A resumed sweep's new rows have none: compute it again (`rank --by udr_a2a`
does when a finished row lacks it).

The encoding lives here, not in `analysis`, because it needs torch and the models.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from tune.config.run import UDR_DEFAULT, RunConfig
from tune.sweep.folder import TRIALS_FILE

log = logging.getLogger(__name__)

FINAL_MODEL = "final_model.pt"
"""A seed's final weights and run config, in its artifact folder (what the all-to-all reads)."""
A2A_COLUMN = "eval/udr_a2a"
_UDR_PROTOCOLS = ("dlib", "fast")  # mipet and none run no group metric


def trial_udr_metrics(cfg: RunConfig, seeds: int) -> list[str]:
    """The group metrics a trial of `seeds` seeds of `cfg` computes: none with one seed or under
    `eval.protocol` mipet/none; else `udr_lasso` and every other one `eval.metrics` names."""
    from analysis.metrics.registry import GROUP_METRIC_KEYS

    if seeds < 2 or cfg.eval.protocol not in _UDR_PROTOCOLS:
        return []
    return [UDR_DEFAULT] + [n for n in cfg.eval.metrics
                            if n in GROUP_METRIC_KEYS and n != UDR_DEFAULT]


def trial_udr_keys(cfg: RunConfig, seeds: int) -> set[str]:
    """The result keys (without `eval/`) those metrics report for a trial."""
    return set(trial_udr_metrics(cfg, seeds))


def group_scores(models: Sequence[Any], data: Any, protocol: str, device: Any,
                 names: Iterable[str], *, seed: int) -> list[dict[str, float]]:
    """Each model's UDR scores in a group, `{"eval/udr_lasso": score, ...}` per model (a NaN
    score is left out).

    Args:
        models: M >= 2 torch models (or zero-argument functions returning one, loaded on use),
            encoded on one shared sample drawn from `data` with `seed`.
        data, device: the data (observations (N, H, W, C)) and the device to encode on.
        protocol: whose budgets (`dlib`, `fast`; another protocol gets `fast`'s).
        names: group metrics (`udr_lasso`, `udr_spearman`).
        seed: the metric seed.
    """
    from analysis.metrics import evaluate_group

    protocol = protocol if protocol in _UDR_PROTOCOLS else "fast"
    fns = [_represent(m, device) for m in models]
    out: list[dict[str, float]] = [{} for _ in models]
    for name in names:
        scores = evaluate_group(data, fns, metric=name, seed=seed, protocol=protocol)
        for row, score in zip(out, scores["model_scores"], strict=True):
            if math.isfinite(score):
                row[f"eval/{name}"] = float(score)
    return out


def _represent(model: Any, device: Any):
    """observations -> (mean, logvar) of a model (loaded on first use when given as a loader)."""
    from tune.train.evaluation import Encoder

    def fn(obs):
        m = model() if callable(model) and not hasattr(model, "encode") else model
        return Encoder(m, device, with_logvar=True)(obs)

    return fn


def model_from_state(state: dict[str, Any], data: Any, device: Any):
    """The model of a `{"config", "model"}` state (a checkpoint's or `final_model.pt`'s)."""
    from models import build_model
    from tune.train.loop import model_config_for

    cfg = RunConfig.from_dict(state["config"])
    model = build_model(model_config_for(cfg, data))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def save_final_model(checkpoint: Path, artifact_dir: Path | None) -> dict[str, Any]:
    """A seed's final weights and run config from its final checkpoint; also written to
    `<artifact_dir>/final_model.pt` (atomically) when the seed has an artifact folder."""
    import torch

    from tune.train.checkpoint import atomic_write, load_state

    full = load_state(checkpoint)
    state = {"config": full["config"], "model": full["model"]}
    if artifact_dir is not None:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        atomic_write(Path(artifact_dir) / FINAL_MODEL, lambda fh: torch.save(state, fh))
    return state


def load_final_model(artifact_dir: str | Path) -> dict[str, Any] | None:
    """The state `save_final_model` wrote into `artifact_dir`, or None if there is none."""
    import torch

    path = Path(artifact_dir) / FINAL_MODEL
    if not path.is_file():
        return None
    with open(path, "rb") as fh:
        return torch.load(fh, map_location="cpu", weights_only=False)


class TrialUDR:
    """One trial's UDR group: the seeds' final models, scored together after the last seed.

    `keep(index, checkpoint, artifact_dir)` at each seed's final report; `score(rows)` at the
    last one adds each model's scores to its row (rows in seed order). Outside the group
    conditions (one seed, protocol mipet/none) both do nothing."""

    def __init__(self, cfg: RunConfig, seeds: int, gpu_ids: list | None = None) -> None:
        self.cfg, self.seeds, self.gpu_ids = cfg, seeds, gpu_ids
        self.names = trial_udr_metrics(cfg, seeds)
        self.states: dict[int, dict[str, Any]] = {}

    def keep(self, index: int, checkpoint: Path | None, artifact_dir: Path | None) -> None:
        if self.names and checkpoint is not None:
            self.states[index] = save_final_model(Path(checkpoint), artifact_dir)

    def score(self, rows: list[dict[str, Any]]) -> None:
        """Add `eval/udr_*` to each seed's row (in place). A group that cannot be scored (a
        seed's model lost, a model that needs labels) is logged and left without UDR."""
        if not self.names or len(rows) < 2:
            return
        from tune.train.loop import load_data, pick_device, seed_streams

        states = [self.states.get(i) or (load_final_model(r["artifact_dir"])
                                         if r.get("artifact_dir") else None)
                  for i, r in enumerate(rows)]
        if any(s is None for s in states):
            log.warning("UDR left out: the final model of a seed of this trial is gone "
                        "(a resumed trial without a local sweep folder)")
            return
        data = load_data(self.cfg)
        device = pick_device(self.cfg.train.device, self.gpu_ids)
        models = [model_from_state(s, data, device) for s in states]
        if any(getattr(m, "needs_labels", False) for m in models):
            log.warning("UDR left out: a conditional model's encoder needs the factors")
            return
        try:
            scores = group_scores(models, data, self.cfg.eval.protocol, device, self.names,
                                  seed=seed_streams(self.cfg.seed)[2])
        except Exception as exc:  # the trial's other numbers stand; an objective UDR fails it
            log.warning("UDR of this trial could not be computed: %s", exc)
            return
        for row, extra in zip(rows, scores, strict=True):
            row.update(extra)


# ---- all-to-all over a finished sweep -----------------------------------------------------------
def all_to_all(folder: str | Path, *, protocol: str | None = None, seed: int = 0):
    """The all-to-all UDR (lasso) of every finished seed of a sweep.

    Args:
        folder: the sweep folder (its trials.parquet and each seed's `final_model.pt`).
        protocol: the budgets (`dlib` or `fast`); default: the runs' `eval.protocol` when it is
            one of them, else `fast`.
        seed: draws the shared sample.
    Returns:
        A DataFrame `trial_id, seed, eval/udr_a2a`, one row per scored model. Models of
        different datasets are scored in separate groups (one per dataset and source).
    Raises:
        ConfigError: no trials table, or fewer than two finished models with a saved final model.
    """
    import functools

    import pandas as pd

    from analysis.trials import FINISHED
    from models.errors import ConfigError
    from tune.train.loop import load_data, pick_device

    table = _read_trials(Path(folder))
    done = table[(table["status"] == FINISHED) & ~table["failed"].fillna(False).astype(bool)]
    found = []
    for _, row in done.iterrows():
        adir = row.get("artifact_dir")
        if isinstance(adir, str) and (Path(adir) / FINAL_MODEL).is_file():
            found.append((str(row["trial_id"]), int(row["seed"]), Path(adir)))
    if len(found) < 2:
        raise ConfigError(
            f"{folder}: the all-to-all UDR needs at least 2 finished models with a saved "
            f"{FINAL_MODEL}, found {len(found)} (a sweep from before UDR, or remote storage)")
    groups: dict[tuple, list] = {}
    for trial_id, seed_, adir in found:
        cfg = RunConfig.from_dict(load_final_model(adir)["config"])
        groups.setdefault((cfg.data.name, cfg.data.source), []).append((trial_id, seed_, adir,
                                                                        cfg))
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        cfg = members[0][3]
        data = load_data(cfg)
        device = pick_device(cfg.train.device)
        models = [functools.partial(_load, m[2], data, device) for m in members]
        scores = group_scores(models, data, protocol or cfg.eval.protocol, device,
                              [UDR_DEFAULT], seed=seed)
        for (trial_id, seed_, _, _), s in zip(members, scores, strict=True):
            out.append({"trial_id": trial_id, "seed": seed_,
                        A2A_COLUMN: s.get(f"eval/{UDR_DEFAULT}", float("nan"))})
    return pd.DataFrame(out, columns=["trial_id", "seed", A2A_COLUMN])


def _load(artifact_dir: Path, data: Any, device: Any):
    return model_from_state(load_final_model(artifact_dir), data, device)


def write_all_to_all(folder: str | Path, *, protocol: str | None = None) -> Path:
    """Compute `all_to_all` and add it to the sweep's trials.parquet as `eval/udr_a2a`."""
    scores = all_to_all(folder, protocol=protocol)
    return add_trial_columns(folder, scores)


def add_trial_columns(folder: str | Path, values) -> Path:
    """Add (or replace) columns of trials.parquet by `(trial_id, seed)`, atomically.

    Args:
        folder: the sweep folder.
        values: a DataFrame with `trial_id`, `seed` and the new columns; a run it lacks gets NaN.
    Returns:
        The table's path. The table keeps every row, in its order, and every other column.
    Raises:
        SweepFolderError: a driver holds the sweep folder (it is running or resuming).
    """
    import pandas as pd

    from tune.sweep.folder import SweepLock
    from tune.train.checkpoint import atomic_write

    folder = Path(folder)
    with SweepLock(folder):  # no driver merges rows into the table meanwhile
        table = _read_trials(folder)
        new = [c for c in values.columns if c not in ("trial_id", "seed")]
        key = pd.MultiIndex.from_arrays([table["trial_id"].astype(str),
                                         pd.to_numeric(table["seed"], errors="coerce")])
        by = values.set_index([values["trial_id"].astype(str),
                               pd.to_numeric(values["seed"], errors="coerce")])
        for col in new:
            table[col] = by[col].reindex(key).to_numpy(dtype=float)
        return atomic_write(folder / TRIALS_FILE, lambda fh: table.to_parquet(fh, index=False))


def _read_trials(folder: Path):
    import pandas as pd

    from models.errors import ConfigError

    path = folder / TRIALS_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: no {TRIALS_FILE} (not a sweep folder, or a sweep that "
                          "never finished a trial)")
    return pd.read_parquet(path)
