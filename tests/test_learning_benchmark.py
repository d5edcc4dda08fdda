"""benchmarks/learning.py at a tiny budget: the product's loop, the table with its floor, the
PNG."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_learning_benchmark_at_a_tiny_budget_writes_its_table_and_curves(tmp_path: Path,
                                                                         capsys) -> None:
    learning = _module("learning")
    out = learning.main(["--models", "beta_vae", "--steps", "4", "--seeds", "1",
                         "--eval-every", "2", "--final-protocol", "fast", "--metrics", "mig",
                         "--batch", "16", "--latent-dim", "4", "--floor-seeds", "1",
                         "--threads", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    header, rule, row = out["table"].splitlines()
    assert header.split("|")[1:-1] == [" model ", " steps ", " min/run ", " mig ", " floor ",
                                       " x "]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[0] == "beta_vae" and cells[1] == "4"
    mig, floor = float(cells[3].split()[0]), float(cells[4])
    assert 0 <= mig <= 1 and 0 <= floor <= 1 and cells[3].endswith(("(1)", "(1) ~"))
    assert out["table"] in printed and (tmp_path / "learning.md").read_text().startswith(header)

    png = tmp_path / "learning_curves.png"
    assert out["png"] == png and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "learning.json").read_text())
    run = record["runs"][0]
    assert list(run["curve"]) == ["2", "4"] and 0 <= run["curve"]["2"]["mig"] <= 1  # fast, midway
    assert run["final"]["mig"] == mig or abs(run["final"]["mig"] - mig) < 5e-4
    assert [f["config/seed"] for f in record["floor"]] == [0]  # the untrained model, seed 0
