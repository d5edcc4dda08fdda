"""Every file in examples/ is read by the command its header names, strictly (a renamed key or
model in the product breaks this test, not a user's first run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _kind(path: Path) -> str:
    head = path.read_text().split("\n\n", 1)[0]
    for kind in ("ablate", "sweep", "train"):
        if f"mipet-tune {kind}" in head:
            return kind
    raise AssertionError(f"{path.name}: its header does not name the command that runs it")


def _overrides(path: Path, tmp_path: Path) -> list[str]:
    """An example whose command sets `data/source=PATH` (your own images) is read with a folder
    of generated PNGs as that source."""
    if "--set data/source=PATH" not in path.read_text().split("\n\n", 1)[0]:
        return []
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
    return [f"data/source={tmp_path}"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_is_read_by_its_command(path: Path, tmp_path: Path) -> None:
    kind = _kind(path)
    overrides = _overrides(path, tmp_path)
    if kind == "train":
        from tune.config import RunConfig, read_yaml

        cfg = RunConfig.from_dict(read_yaml(path))
        assert cfg.train.steps > 0
    elif kind == "sweep":
        from tune.config.sweep import SweepSpec

        spec = SweepSpec.load(config=path, overrides=overrides)
        spec.run_config()
        assert spec.num_samples >= 1
    else:
        from tune.sweep.ablate import AblationSpec

        spec = AblationSpec.load(path)
        assert spec.name


def test_the_annealed_example_schedules_beta_on_a_capacity_annealed_model() -> None:
    from tune.config import RunConfig, read_yaml

    cfg = RunConfig.from_dict(read_yaml(EXAMPLES / "annealed_schedules.yaml"))
    assert "annealed_vae" in cfg.model.loss_terms or cfg.model.name.endswith("annealed_vae")
    assert "model/beta" in cfg.train.schedules
    assert cfg.train.lr_scheduler["name"] == "ReduceLROnPlateau"
