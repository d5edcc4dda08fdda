"""A training run's checkpoint: what it holds, writing and reading it, and which one to resume.

A checkpoint is one atomic folder (`tune.train.checkpoint.write_checkpoint`) holding `state.pt`
(the run config, the model, optimizer, adversary, lr-scheduler and loader states, the step, the
history of fast metrics and every random-number state), the run's `config.yaml` and, for a Ray
trial, the trainable's `meta.json`. A resumed run goes on exactly as if it had never stopped.

A checkpoint is read back only into the same run: the same config and seed, except
`train/steps` (`tune.config.run.RESUMABLE_KEYS`), which a user changes to train longer. Anything
else refuses with the changed keys (`model/beta: 4.0 -> 6.0`).

`choose_checkpoint` picks what `mipet-tune train --resume` continues from, newest first:
- a folder whose write did not finish (no `COMPLETE` marker, a file missing or shorter than its
  marker records: a crash or a half copy) is skipped with a warning naming it;
- a folder whose files have the recorded sizes but not the recorded SHA-256 (bytes changed after
  the write: damaged storage, not an interrupted write) stops the choice: it refuses, naming it
  and the readable ones, so that the user picks one (`--from CHECKPOINT`) knowingly;
- no readable checkpoint at all refuses, naming every folder and what is wrong with it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.errors import ConfigError, DataFileError
from tune.config.run import RunConfig, config_changes
from tune.train.checkpoint import (
    MARKER,
    is_complete,
    load_state,
    read_marker,
    save_state,
    sha256,
    write_checkpoint,
)

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG_FILE", "META_FILE", "STATE_FILE", "Candidate", "checkpoint_step", "checkpoints_in",
    "choose_checkpoint", "load_checkpoint", "save_checkpoint",
]

STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
_NAME = re.compile(r"checkpoint_(\d+)$")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the torch (and CUDA) random-number states a checkpoint holds."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, cfg: RunConfig, state: dict[str, Any],
                    meta: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint of the training `state` (model, optimizer, ... states) into
    `folder` (atomically: temp dir, then rename), with the caller's `meta` (JSON) beside it.

    Raises:
        OSError: the folder cannot be written (nothing visible is left behind).
    """
    state = {"format": 1, "config": cfg.to_dict(), **state, "rng": _rng_state()}

    def write(tmp: Path) -> None:
        save_state(tmp, state, filename=STATE_FILE)
        (tmp / CONFIG_FILE).write_text(cfg.to_yaml())
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(meta))

    return write_checkpoint(folder.parent, folder.name, write, step=int(state["step"]))


def load_checkpoint(folder: Path, cfg: RunConfig) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` for the run `cfg`.

    Raises:
        ConfigError: not a checkpoint; one of another configuration or seed (the message lists
            the changed keys); one past `cfg.train.steps`.
        DataFileError: its files are incomplete or corrupt.
    """
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise ConfigError(f"{folder}: not a mipet-tune checkpoint (no {STATE_FILE})")
    state = load_state(folder, filename=STATE_FILE)
    changes = config_changes(state.get("config") or {}, cfg)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if changes[8:] else "")
        raise ConfigError(f"{folder}: checkpoint of another configuration: {shown}")
    step = int(state["step"])
    if step > cfg.train.steps:
        raise ConfigError(
            f"{folder}: the checkpoint is at step {step}, past train/steps={cfg.train.steps}; "
            f"give train/steps >= {step} or an earlier checkpoint"
        )
    return state


# ---- which checkpoint a resumed run continues from ---------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One checkpoint folder of a run and what is wrong with it (`problem`: None if readable).

    `damaged`: its files have the sizes its marker records but other bytes (not an interrupted
    write)."""

    path: Path
    step: int
    problem: str | None = None
    damaged: bool = False


def checkpoint_step(path: Path) -> int:
    """A checkpoint folder's step: its marker's, else the number in its name (-1: neither)."""
    step = (read_marker(path) or {}).get("step")
    if isinstance(step, int):
        return step
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else -1


def checkpoints_in(root: Path) -> list[Path]:
    """The visible checkpoint folders in `root`, oldest first (hidden ones are unfinished
    writes or replaced folders)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (checkpoint_step(p), p.name))


def inspect(path: Path) -> Candidate:
    """Check every file of a checkpoint folder against its `COMPLETE` marker (sizes, then
    SHA-256)."""
    step = checkpoint_step(path)
    marker = read_marker(path)
    if marker is None:
        return Candidate(path, step, f"no readable {MARKER} marker (its write did not finish)")
    if not is_complete(path):
        files = marker.get("files") if isinstance(marker.get("files"), dict) else {}
        for rel, meta in files.items():
            file = path / rel
            if not file.is_file():
                return Candidate(path, step, f"{rel} is missing")
            size = file.stat().st_size
            if size != meta.get("size"):
                return Candidate(path, step, f"{rel} is {size} bytes, its {MARKER} marker "
                                             f"records {meta.get('size')} (truncated)")
        return Candidate(path, step, f"its {MARKER} marker is damaged")
    if not is_complete(path, verify=True):
        changed = [rel for rel, meta in marker["files"].items()
                   if sha256(path / rel) != meta.get("sha256")]
        return Candidate(path, step, f"{', '.join(changed)} changed after it was written (same "
                                     "size, other SHA-256)", damaged=True)
    return Candidate(path, step)


def choose_checkpoint(root: Path) -> Path:
    """The newest readable checkpoint in `root` (see the module's docstring), logging which one
    and why each newer one was skipped.

    Raises:
        DataFileError: a newer checkpoint is damaged (bytes changed at the same size), or no
            checkpoint is readable; the message names the folders and what to do.
    """
    found = [inspect(p) for p in reversed(checkpoints_in(root))]  # newest first
    readable = [c for c in found if c.problem is None]
    newest_ok = readable[0].step if readable else -2
    newer = [c for c in found if c.step > newest_ok]  # what resuming from it would skip
    damaged = [c for c in newer if c.damaged]
    if damaged:
        bad = "; ".join(f"{c.path.name}: {c.problem}" for c in damaged)
        ok = ", ".join(c.path.name for c in readable) or "none"
        raise DataFileError(
            f"{root}: {bad}: the storage may be damaged, so no checkpoint is chosen for you; "
            f"give one with --from CHECKPOINT (readable: {ok}) or start over with --restart"
        )
    if not readable:
        listed = "; ".join(f"{c.path.name}: {c.problem}" for c in found) or "it holds none"
        raise DataFileError(f"{root}: no readable checkpoint ({listed}); start over with "
                            "--restart")
    chosen = readable[0]
    for c in newer:
        log.warning("skipping checkpoint %s: %s", c.path, c.problem)
    why = "the newest readable one" if newer else "the newest"
    log.info("resuming from %s (step %d), %s", chosen.path, chosen.step, why)
    for c in found:
        if c.problem is not None and c.step < chosen.step:
            log.warning("an older checkpoint is unreadable too: %s: %s", c.path, c.problem)
    return chosen.path
