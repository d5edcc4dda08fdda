"""A synthetic sweep folder with known answers: test scaffolding (the tests import it).

`synthetic_trials()` builds a trials table in the `trials.parquet` schema; `write_sweep()`
writes it as a sweep folder (`sweep.yaml`, `trials.parquet`, a Ray-style `ray/` folder with
`params.json`/`result.json`/`error.txt`, and `trials/<id>/*.png`). No training happens; the
metric values follow simple formulas, so the rankings are known:

    eval/mig     = 0.10 + 0.15 * [mipet] + 0.03 * num_ipe + 0.02 * log2(beta) - 0.1 * wd_on
                   + 0.004 * (seed - 1)
    train/recon  = 20 + 4 * log2(beta) + 0.1 * seed

`write_sweep` also writes a noise floor (`floor.parquet`, see `synthetic_floor`): both models'
untrained MIG is 0.035, 0.045 and 0.055 over three seeds (mean 0.045, sd 0.01), so a
configuration is clearly above it exactly when its seed-mean MIG is at least 0.09: all but the
three beta_vae configurations with weight decay (MIG about 0, 0.04 and 0.08).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.trials import config_hash, flatten

__all__ = ["synthetic_floor", "synthetic_trials", "write_sweep"]

FLOOR_MIG = (0.035, 0.045, 0.055)

_EVAL = ("mig", "dci_disentanglement", "factor_vae", "sap", "gaussian_total_correlation")


def _config(name: str, beta: float, num_ipe: int | None, wd: float, seed: int) -> dict[str, Any]:
    model: dict[str, Any] = {"name": name, "beta": beta, "latent_dim": 10, "hy_rec": 1.0}
    if num_ipe is not None:
        model["num_ipe"] = num_ipe
    return {
        "model": model,
        "data": {"name": "dsprites", "source": None},
        "train": {"steps": 200, "batch_size": 64, "lr": 4e-4, "weight_decay": wd},
        "eval": {"protocol": "dlib", "metrics": ["mig", "dci"]},
        "seed": seed,
    }


def synthetic_trials(*, n_seeds: int = 3, broken: bool = True) -> pd.DataFrame:
    """A trials table: beta_vae (num_ipe absent) and mipet_vae (num_ipe 1 or 3), beta in
    {1, 4, 16}, weight decay in {0, 1e-4}, `n_seeds` seeds each; with `broken`, one more
    failed trial, one non-finite trial and one still running (all three flagged)."""
    rows = []
    configs: dict[str, dict[str, Any]] = {}
    grid = [("beta_vae", None)] + [("mipet_vae", k) for k in (1, 3)]
    n = 0
    for (name, k), beta, wd, seed in itertools.product(
        grid, (1.0, 4.0, 16.0), (0.0, 1e-4), range(n_seeds)
    ):
        cfg = _config(name, beta, k, wd, seed)
        mig = (
            0.10
            + 0.15 * (name == "mipet_vae")
            + 0.03 * (k or 0)
            + 0.02 * math.log2(beta)
            - 0.1 * (wd > 0)
            + 0.004 * (seed - 1)
        )
        recon = 20 + 4 * math.log2(beta) + 0.1 * seed
        tid = f"{n:05d}"
        n += 1
        configs[tid] = cfg
        rows.append(_row(tid, cfg, "TERMINATED", mig, recon))
    if broken:
        for status, err, nonfinite in (
            ("ERROR", "RuntimeError: CUDA out of memory", False),
            ("ERROR", "NonFiniteLossError: non-finite loss at step 17: recon=nan", True),
            ("RUNNING", None, False),
        ):
            cfg = _config("mipet_vae", 64.0, 3, 0.0, 0)
            configs[f"{n:05d}"] = cfg
            row = _row(f"{n:05d}", cfg, status, 0.99, 1.0)  # values that would win if counted
            row.update(failed=status == "ERROR", nonfinite=nonfinite, error=err)
            if status == "RUNNING":
                row["step"] = 50
            n += 1
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["configs"] = configs  # trial_id -> nested config, as Ray holds it
    return df


def synthetic_floor(mig: tuple[float, ...] = FLOOR_MIG) -> pd.DataFrame:
    """The floor table of the synthetic sweep: per model, one untrained row per seed, with the
    other metrics derived from MIG as the trials' are."""
    from analysis.floor import floor_rows

    rows = []
    for model in ("beta_vae", "mipet_vae"):
        for seed, m in enumerate(mig):
            rows.append(floor_rows(model, "dsprites", seed, "dlib", {
                "mig": m, "dci_disentanglement": 0.8 * m + 0.05, "factor_vae": 0.5 + m,
                "sap": 0.3 * m, "gaussian_total_correlation": 0.5 - m}))
    return pd.DataFrame(rows)


def _row(tid: str, cfg: dict[str, Any], status: str, mig: float, recon: float) -> dict[str, Any]:
    row: dict[str, Any] = {
        "trial_id": tid,
        "status": status,
        "failed": False,
        "nonfinite": False,
        "error": None,
        "config_id": config_hash(cfg),
        "seed": cfg["seed"],
    }
    for key, value in flatten(cfg).items():
        row[f"config/{key}"] = value
    row.update(
        {
            "eval/mig": mig,
            "eval/dci_disentanglement": 0.8 * mig + 0.05,
            "eval/factor_vae": min(1.0, 0.5 + mig),
            "eval/sap": 0.3 * mig,
            "eval/gaussian_total_correlation": 0.5 - mig,
            "train/loss": recon + 10.0,
            "train/recon": recon,
            "train/kld": 10.0,
            "step": cfg["train"]["steps"],
            "time_total_s": 12.5,
            "images_per_s": 1000.0,
            "node": "127.0.0.1",
            "checkpoint_path": None,
            "artifact_dir": None,
            "trial_dir": None,
        }
    )
    return row


def write_sweep(
    df: pd.DataFrame,
    folder: str | Path,
    *,
    parquet: bool = True,
    ray: bool = True,
    images: bool = True,
    name: str = "synthetic",
    floor: pd.DataFrame | bool = True,
) -> Path:
    """Write `df` as a sweep folder; fills `trial_dir`, `artifact_dir`, `checkpoint_path`.
    With `floor` (True: `synthetic_floor()`, or a floor table) it writes `floor.parquet` too;
    False leaves it out, as in a sweep from before floors.

    Returns:
        The sweep folder.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.yaml").write_text(f"name: {name}\ndataset: dsprites\nmetric: mig\nmode: max\n")
    df = df.copy()
    cfg_cols = [c for c in df.columns if c.startswith("config/")]
    for i, row in df.iterrows():
        tid = row["trial_id"]
        config: dict[str, Any] = {}
        known = df.attrs.get("configs", {}).get(tid)
        for col in [] if known else cfg_cols:
            value = row[col]
            if isinstance(value, float) and math.isnan(value):
                continue
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if isinstance(value, np.generic):
                value = value.item()
            node = config
            parts = col.split("/")[1:]
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        config = known or config
        tdir = root / "ray" / f"trial_{tid}"  # tune names trial folders by trial id
        tdir.mkdir(parents=True, exist_ok=True)
        df.at[i, "trial_dir"] = str(tdir)
        if ray:
            checkpoint = _write_ray_trial(tdir, row, config, df.columns)
            if checkpoint is not None:
                df.at[i, "checkpoint_path"] = checkpoint
        if images and row["status"] == "TERMINATED":
            adir = root / "trials" / str(tid)
            adir.mkdir(parents=True, exist_ok=True)
            _write_pngs(adir, seed=i)
            df.at[i, "artifact_dir"] = str(adir)
    df.attrs = {}
    if parquet:
        df.to_parquet(root / "trials.parquet", index=False)
    if floor is not False:
        from analysis.floor import FLOOR_FILE

        table = synthetic_floor() if floor is True else floor
        table.to_parquet(root / FLOOR_FILE, index=False)
    return root


def _write_ray_trial(
    tdir: Path, row: pd.Series, config: dict[str, Any], columns: pd.Index
) -> str | None:
    """A Ray trial folder as the trainable leaves it: params.json, one result.json line per
    report (the last one with the final metrics), error.txt; returns the checkpoint folder."""
    (tdir / "params.json").write_text(json.dumps(config))
    lines: list[dict[str, Any]] = []
    final_step = int(row["step"])
    for step in sorted({final_step // 2, final_step}):
        rec: dict[str, Any] = {
            "step": step,
            "trial_id": row["trial_id"],
            "training_iteration": len(lines) + 1,
            "time_total_s": float(row["time_total_s"]) * step / max(final_step, 1),
            "node_ip": row["node"],
            "done": False,
            "config": config,
            "config_id": row["config_id"],  # a trial reports its own id
            "fast/mig": float(row.get("eval/mig", float("nan"))) * 0.9,
        }
        rec.update({c: float(row[c]) for c in columns if c.startswith("train/")})
        if row["nonfinite"] and step == final_step:
            continue  # the trainer raises instead of reporting the non-finite loss
        lines.append(rec)
    if row["status"] == "TERMINATED":
        lines[-1].update({c: float(row[c]) for c in columns if c.startswith("eval/")})
        lines[-1]["done"] = True
    (tdir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if row["status"] == "ERROR":
        (tdir / "error.txt").write_text(f"Traceback (most recent call last):\n{row['error']}\n")
    if row["status"] != "TERMINATED":
        return None
    ck = tdir / "checkpoint_000001"
    ck.mkdir(exist_ok=True)
    return str(ck)


def _write_pngs(folder: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:16, 0:16]
    # traversal: rows = latents, columns = steps; a blob moving across
    tiles = []
    for latent in range(4):
        row = []
        for step in range(6):
            cx, cy = (2 + 2.2 * step, 8) if latent % 2 == 0 else (8, 2 + 2.2 * step)
            row.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (4 + latent)))
        tiles.append(np.hstack(row))
    plt.imsave(folder / "traversal.png", np.vstack(tiles), cmap="gray")
    pair = rng.random((16, 16))
    plt.imsave(folder / "reconstruction.png", np.hstack([pair, pair * 0.8]), cmap="gray")


def table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """A typed trials table from a few dicts, with defaults for what they leave out.

    Each record gives `config/...`, `eval/...`, `train/...` values and optionally `seed`,
    `status`, `failed`, `nonfinite`, `trial_id`, `config_id`, `step`; missing ones default to
    a finished healthy trial, `trial_id` = its position, `config_id` = a hash of its config
    columns, `seed` = 0.

    Example:
        >>> df = table([{"config/model/beta": 1.0, "eval/mig": 0.2, "seed": 0},
        ...             {"config/model/beta": 4.0, "eval/mig": 0.3, "seed": 0}])
    """
    from analysis.sweep import _typed

    rows = []
    for i, rec in enumerate(records):
        row = {
            "trial_id": f"t{i:03d}",
            "status": "TERMINATED",
            "failed": False,
            "nonfinite": False,
            "error": None,
            "seed": 0,
        }
        row.update(rec)
        if "config_id" not in rec:
            cfg = {k: v for k, v in rec.items() if k.startswith("config/") and k != "config/seed"}
            row["config_id"] = config_hash(cfg)
        row.setdefault("config/seed", row["seed"])
        rows.append(row)
    return _typed(pd.DataFrame(rows), where="synthetic table")
