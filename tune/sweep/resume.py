"""What a resumed sweep reads back from its folder: the spec it started with, whether Ray's
experiment state can be restored, and each trial's status in Ray's last snapshot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tune.config.run import read_yaml
from tune.config.sweep import SweepSpec
from tune.sweep.folder import RAY_DIR, SPEC_FILE, TRIALS_FILE, SweepFolderError
from tune.sweep.table import finished_count

log = logging.getLogger(__name__)


def resumed_spec(folder: Path) -> SweepSpec:
    """The spec a sweep folder was started with, its search space as it was then."""
    spec_path = folder / SPEC_FILE
    if not spec_path.is_file():
        raise SweepFolderError(f"{folder}: the sweep folder lacks {SPEC_FILE} (the sweep's "
                               "settings); it cannot be resumed")
    saved = read_yaml(spec_path)
    resolved = saved.pop("resolved", None) or {}
    if resolved.get("space"):  # the space as it was, even if its preset changed since
        saved["space"] = resolved["space"]
    return SweepSpec.from_dict(saved)


def check_ray_state(folder: Path, spec: SweepSpec) -> None:
    """Refuse to resume when Ray's experiment state is damaged but trials have run: a new
    experiment in the folder would start the sweep over (and run more than num_samples)."""
    problem = ray_state_problem(folder / RAY_DIR)
    if problem is None:
        return
    ray_dir = folder / RAY_DIR
    ran = any(ray_dir.glob("*/params.json")) or (folder / TRIALS_FILE).is_file()
    if not ran:
        return  # nothing ran yet: a fresh experiment loses nothing
    finished = finished_count(folder) if (folder / TRIALS_FILE).is_file() else None
    kept = (f"its {finished} finished of {spec.num_samples} trials stay readable"
            if finished is not None else "its trials stay readable from ray/")
    raise SweepFolderError(
        f"{folder}: cannot resume: Ray's experiment state is damaged ({problem}), and a new "
        f"experiment would start the sweep over; {kept} (`mipet-tune rank {folder}`); restore "
        f"{RAY_DIR}/ from a backup to continue, or run the rest as a new sweep with another "
        "--name")


def ray_state_problem(ray_dir: Path) -> str | None:
    """What is wrong with Ray's experiment folder for `Tuner.restore`, or None if nothing."""
    if not ray_dir.is_dir():
        return f"{RAY_DIR}/ is missing"
    if not (ray_dir / "tuner.pkl").is_file():
        return f"{RAY_DIR}/tuner.pkl is missing"
    states = sorted(ray_dir.glob("experiment_state-*.json"))
    if not states:
        return f"no {RAY_DIR}/experiment_state-*.json"
    newest = states[-1]  # Ray restores the newest (the names sort by time)
    try:
        state = json.loads(newest.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        return f"{RAY_DIR}/{newest.name} is truncated or unreadable: {exc}"
    if not isinstance(state, dict) or "trial_data" not in state:
        return f"{RAY_DIR}/{newest.name} holds no trial data"
    return None


def saved_statuses(folder: Path) -> dict[str, str]:
    """Each trial's status in Ray's last experiment snapshot (the one a resume restores; the
    ResultGrid of an interrupted fit marks stopped trials TERMINATED)."""
    try:
        from ray.tune import ExperimentAnalysis

        return {t.trial_id: t.status for t in ExperimentAnalysis(str(folder / RAY_DIR)).trials}
    except Exception as exc:  # no snapshot: decide from the reports (see trials_table)
        log.debug("no experiment snapshot to read statuses from: %s", exc)
        return {}
