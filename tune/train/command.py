"""`mipet-tune train`: one configuration without a sweep (for example an exported best config)."""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tune.config.run import RunConfig, apply_overrides, read_yaml

log = logging.getLogger(__name__)

RESULT_FILE = "result.yaml"


def run_folder(out: str | Path, cfg: RunConfig) -> Path:
    """Runs are named by model, config hash and seed, so runs of different configs never
    collide."""
    return Path(out).expanduser().resolve() / f"{cfg.model.name}-{cfg.config_id()}-seed{cfg.seed}"


def latest_checkpoint(folder: Path) -> Path | None:
    from tune.train.checkpoint import latest_complete

    return latest_complete(folder) if folder.is_dir() else None


def train_from_file(config: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
                    out: str | Path = "runs/train", resume: bool = False,
                    keep_checkpoints: int = 2, progress: bool | None = None) -> str:
    """Train the run config in `config` (extra `metrics`/`provenance` keys of an exported config
    are ignored for training, and its recorded losses compared with the new ones at the end).
    `progress`: a tqdm bar on stderr (None: when stderr is a terminal; else log lines).
    Returns a short summary for stdout."""
    raw = read_yaml(config)
    recorded = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
    if isinstance(recorded.get("trial"), dict):  # an exported best config: the run it came from
        recorded = recorded["trial"]
    cfg = RunConfig.from_dict(apply_overrides(raw, list(overrides)))
    folder = run_folder(out, cfg)
    ckpt_root = folder / "checkpoints"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    if not resume and ckpt_root.exists() and any(ckpt_root.iterdir()):
        log.info("%s has checkpoints from an earlier run; starting over "
                 "(use --resume to continue)",
                 folder)
        shutil.rmtree(ckpt_root)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(cfg.to_yaml())
    log.info("training %s (config %s, seed %d) for %d steps into %s", cfg.model.name,
             cfg.config_id(), cfg.seed, cfg.train.steps, folder)

    from tune.train.checkpoint import read_marker

    start = int((read_marker(resume_from) or {}).get("step") or 0) if resume_from else 0
    bar = ProgressBar(cfg.train.steps, initial=start, enabled=progress)

    def report(metrics: dict[str, Any], saved: Path | None) -> None:
        if not bar.show(metrics):
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                             if k.startswith("train/") and isinstance(v, float))
            log.info("step %d/%d %s (%.0f img/s)", metrics.get("step", 0), cfg.train.steps,
                     shown, metrics.get("images_per_s", 0.0))
        if saved is not None:
            _prune(ckpt_root, keep_checkpoints)

    from tune.train.loop import run_training

    try:
        result = run_training(cfg, report=report, resume_from=resume_from,
                              checkpoint_root=ckpt_root, artifact_dir=folder,
                              progress=bar.step if bar.bar is not None else None)
    finally:
        bar.close()
    _prune(ckpt_root, keep_checkpoints)
    summary = {
        "config_id": cfg.config_id(),
        "seed": cfg.seed,
        "step": result.step,
        "losses": {f"train/{k}": v for k, v in result.losses.items()},
        "metrics": {f"eval/{k}": v for k, v in result.metrics.items()},
        "images_per_s": result.images_per_s,
        "seconds": result.seconds,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
    }
    (folder / RESULT_FILE).write_text(yaml.safe_dump(summary, sort_keys=False))
    lines = [f"run folder: {folder}", f"steps: {result.step}"]
    for key, value in {**summary["losses"], **summary["metrics"]}.items():
        line = f"{key}: {value:.6g}"
        if key in recorded and isinstance(recorded[key], (int, float)):
            ref = float(recorded[key])
            same = math.isclose(value, ref, rel_tol=1e-4, abs_tol=1e-6)
            line += f"   (exported: {ref:.6g}{'' if same else ', differs'})"
        lines.append(line)
    return "\n".join(lines)


class ProgressBar:
    """A tqdm bar of the run's steps on stderr (steps, loss, img/s, time left), or nothing."""

    def __init__(self, total: int, *, initial: int = 0, enabled: bool | None = None) -> None:
        self.bar = None
        self.done = initial
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", file=sys.stderr,
                            dynamic_ncols=True)

    def step(self, step: int) -> None:
        assert self.bar is not None
        self.bar.update(step - self.done)
        self.done = step

    def show(self, metrics: dict[str, Any]) -> bool:
        """Put a report's loss and speed on the bar; False without a bar."""
        if self.bar is None:
            return False
        loss = metrics.get("train/loss")
        post = {"loss": f"{loss:.4g}"} if isinstance(loss, float) else {}
        post["img/s"] = f"{metrics.get('images_per_s', 0.0):.0f}"
        self.bar.set_postfix(post, refresh=False)
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _prune(root: Path, keep: int) -> None:
    if not root.is_dir():
        return
    ckpts = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("checkpoint_"))
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
