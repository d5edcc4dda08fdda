"""`mipet-tune train`: one configuration without a sweep (for example an exported best config).

A run's folder is `<out>/<model>-<run_id>-seed<seed>`: `run_id` hashes the whole run config but
the seed and `train/steps`, so runs of different configs never share a folder and a run trained
longer keeps its own. What happens to a folder that already holds checkpoints:

- without `--resume`: refused (one line, exit 2); nothing is deleted;
- `--resume`: continues from the newest readable checkpoint (`run_checkpoint.choose_checkpoint`
  says which and why newer ones were skipped), to the new `train/steps` if that changed;
- `--from CHECKPOINT`: continues from that checkpoint folder (it must be of this run);
- `--restart`: removes the folder's earlier run (checkpoints, TensorBoard, images), saying so,
  and trains from step 0.
`--resume` with no checkpoint of this configuration refuses too, naming the nearest run in
`--out` and the keys that differ (`model/beta: 4.0 -> 6.0`).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from models.errors import ConfigError
from tune.config.run import (
    RunConfig,
    apply_overrides,
    check_one_model,
    config_changes,
    read_yaml,
)

log = logging.getLogger(__name__)

RESULT_FILE = "result.yaml"
CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"


def run_folder(out: str | Path, cfg: RunConfig) -> Path:
    """A run's folder: named by model, run id (the config hash without `train/steps`) and
    seed, so runs of different configs never collide and a longer run keeps its folder."""
    return Path(out).expanduser().resolve() / f"{cfg.model.name}-{cfg.run_id()}-seed{cfg.seed}"


def train_from_file(config: str | Path, *, overrides: list[str] | tuple[str, ...] = (),
                    out: str | Path = "runs/train", resume: bool = False,
                    restart: bool = False, from_checkpoint: str | Path | None = None,
                    keep_checkpoints: int = 2, progress: bool | None = None) -> str:
    """Train the run config in `config` (extra `metrics`/`provenance` keys of an exported config
    are ignored for training, and its recorded losses compared with the new ones at the end).

    Args:
        resume: continue from the newest readable checkpoint of this run.
        restart: remove this run's earlier checkpoints (and its other files) and start over.
        from_checkpoint: continue from this checkpoint folder.
        progress: a tqdm bar on stderr (None: when stderr is a terminal; else log lines).
    Returns:
        A short summary for stdout.
    Raises:
        ConfigError: a bad config, an unwritable `--out`, or a folder state that the flags do not
            fit (see the module's docstring); DataFileError: no readable checkpoint to resume.
    """
    if sum(map(bool, (resume, restart, from_checkpoint))) > 1:
        raise ConfigError("give at most one of --resume, --restart and --from")
    raw = read_yaml(config)
    recorded = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
    if isinstance(recorded.get("trial"), dict):  # an exported best config: the run it came from
        recorded = recorded["trial"]
    cfg = RunConfig.from_dict(apply_overrides(raw, list(overrides)))
    cfg = check_one_model(cfg, exported="provenance" in raw)
    folder = run_folder(out, cfg)
    ckpt_root = folder / CHECKPOINTS
    resume_from = _starting_point(cfg, folder, out, resume=resume, restart=restart,
                                  from_checkpoint=from_checkpoint)
    _probe_writable(folder, out)
    if restart and folder.exists():
        _remove_earlier_run(folder)
        folder.mkdir(parents=True)
    _remove_unfinished_writes(ckpt_root)
    (folder / CONFIG_FILE).write_text(cfg.to_yaml())
    log.info("training %s (config %s, seed %d) for %d steps into %s", cfg.model.name,
             cfg.config_id(), cfg.seed, cfg.train.steps, folder)

    from tune.train.checkpoint import read_marker

    start = int((read_marker(resume_from) or {}).get("step") or 0) if resume_from else 0
    bar = ProgressBar(cfg.train.steps, initial=start, enabled=progress)
    current = [start]

    def report(metrics: dict[str, Any], saved: Path | None) -> None:
        current[0] = int(metrics.get("step", current[0]))
        if not bar.show(metrics):
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                             if k.startswith("train/") and isinstance(v, float))
            log.info("step %d/%d %s (%.0f img/s)", metrics.get("step", 0), cfg.train.steps,
                     shown, metrics.get("images_per_s", 0.0))
        if saved is not None:
            _prune(ckpt_root, keep_checkpoints, current[0])

    from tune.train.loop import run_training

    try:
        result = run_training(cfg, report=report, resume_from=resume_from,
                              checkpoint_root=ckpt_root, artifact_dir=folder,
                              progress=bar.step if bar.bar is not None else None)
    finally:
        bar.close()
    _prune(ckpt_root, keep_checkpoints, result.step)
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


# ---- where a run starts -------------------------------------------------------------------
def _starting_point(cfg: RunConfig, folder: Path, out: str | Path, *, resume: bool,
                    restart: bool, from_checkpoint: str | Path | None) -> Path | None:
    """The checkpoint the run continues from (None: step 0), or a one-line refusal. Reads
    only; nothing is written or removed here."""
    from tune.train.run_checkpoint import (
        checkpoint_step,
        checkpoints_in,
        choose_checkpoint,
        load_checkpoint,
    )

    ckpt_root = folder / CHECKPOINTS
    existing = checkpoints_in(ckpt_root)
    if from_checkpoint is not None:
        chosen = Path(from_checkpoint).expanduser().resolve()
        if not chosen.is_dir():
            raise ConfigError(f"--from {from_checkpoint}: no such checkpoint folder")
        load_checkpoint(chosen, cfg)  # refuses one of another run, or a corrupt one
        log.info("resuming from %s (given with --from)", chosen)
    elif resume:
        if not existing:
            raise ConfigError(_nothing_to_resume(cfg, folder, out))
        chosen = choose_checkpoint(ckpt_root)
        step = checkpoint_step(chosen)
        if step > cfg.train.steps:
            raise ConfigError(
                f"{chosen}: the newest checkpoint is at step {step}, past train/steps="
                f"{cfg.train.steps}; give train/steps >= {step}, or --from an earlier checkpoint"
            )
    else:
        if existing and not restart:
            raise ConfigError(
                f"{folder} holds checkpoints of an earlier run of this configuration (newest: "
                f"{existing[-1].name}); continue it with --resume (a changed train/steps "
                "trains it to the new length) or train it again from step 0 with --restart"
            )
        return None
    _note_changed_steps(cfg, chosen)
    return chosen


def _note_changed_steps(cfg: RunConfig, chosen: Path) -> None:
    saved = folder_config(chosen)
    before = ((saved or {}).get("train") or {}).get("steps")
    if before is None or before == cfg.train.steps:
        return
    log.info("train/steps changed from %s to %d: the run continues to the new length",
             before, cfg.train.steps)
    if cfg.train.lr_schedule != "const" or cfg.train.warmup_steps:
        log.warning("train/lr_schedule=%s decays over train/steps: from the checkpoint on it "
                    "follows the new length, so this run differs from one trained for %d steps "
                    "from the start", cfg.train.lr_schedule, cfg.train.steps)


def folder_config(folder: Path) -> dict[str, Any] | None:
    """The run config dict a run or checkpoint folder recorded (its config.yaml), or None."""
    try:
        loaded = yaml.safe_load((folder / CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _nothing_to_resume(cfg: RunConfig, folder: Path, out: str | Path) -> str:
    """Why `--resume` has nothing to continue: the nearest run in `out` and what differs, or
    that there is none."""
    from tune.train.run_checkpoint import checkpoints_in

    if folder.is_dir():  # this run began but was stopped before it wrote a checkpoint
        return (f"--resume: {folder} has no checkpoint (the run stopped before its first, due "
                f"every train/checkpoint_every={cfg.train.checkpoint_every} steps); drop --resume "
                "to start it from step 0")
    best: tuple[int, Path, list[str]] | None = None
    parent = folder.parent
    for other in sorted(parent.iterdir()) if parent.is_dir() else ():
        saved = folder_config(other)
        if saved is None or not checkpoints_in(other / CHECKPOINTS):
            continue
        changes = config_changes(saved, cfg)
        if best is None or len(changes) < best[0]:
            best = (len(changes), other, changes)
    if best is None:
        return (f"--resume: no checkpoint of this configuration in {out}; drop --resume to "
                "start it from step 0")
    _, other, changes = best
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if changes[6:] else "")
    return (f"--resume: no checkpoint of this configuration in {out}; the nearest run there, "
            f"{other.name}, differs in {shown}; undo the change to continue that run, or drop "
            "--resume to train the changed configuration as a new run from step 0")


def _probe_writable(folder: Path, out: str | Path) -> None:
    """Refuse in one line, before any training, a run folder that cannot be written."""
    probe = folder / f".write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--out {out}: cannot write the run folder {folder} ({exc.strerror or exc}); give a "
            "writable --out"
        ) from None


def _remove_unfinished_writes(root: Path) -> None:
    """Remove the temporary folders of checkpoint writes that a killed run left (never a
    published checkpoint, nor the previous version a replacement set aside)."""
    for tmp in sorted(root.glob(".checkpoint_*.tmp-*")) if root.is_dir() else ():
        log.info("removing %s, a checkpoint write that a stopped run left unfinished", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_earlier_run(folder: Path) -> None:
    from tune.train.run_checkpoint import checkpoint_step, checkpoints_in

    steps = [checkpoint_step(p) for p in checkpoints_in(folder / CHECKPOINTS)]
    what = f"its checkpoints at steps {', '.join(map(str, steps))}" if steps else "no checkpoint"
    log.warning("--restart: removing the earlier run in %s (%s)", folder, what)
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise ConfigError(f"--restart: cannot remove {folder} ({exc.strerror or exc})") from None


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


def _prune(root: Path, keep: int, step: int) -> None:
    """Keep the newest `keep` checkpoints up to `step`; a later one (a damaged checkpoint that
    the run resumed from before) is left until the run's own checkpoint of that step replaces
    it."""
    from tune.train.run_checkpoint import checkpoint_step, checkpoints_in

    done = [p for p in checkpoints_in(root) if checkpoint_step(p) <= step]
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
