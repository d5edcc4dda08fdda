"""A `zoo` sweep through `mipet-tune sweep` on the built-in dSprites, shortened with --set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from models._facts import MODEL_FACTS
from tune.cli.commands import main

pytestmark = pytest.mark.ray

KNOBS = {"factor_gamma": ("factor",), "capacity_max": ("annealed",), "dip_lambda_od": ("dip",),
         "num_ipe": ("mipet_",)}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "zoo_sweep.yaml"


def test_zoo_sweep_runs_through_the_cli(ray_session, tmp_path: Path) -> None:
    argv = [
        "sweep", "--config", str(EXAMPLE), "--out", str(tmp_path), "--name", "zoo",
        "--set", "num_samples=3", "--set", "train/steps=4", "--set", "train/report_every=2",
        "--set", "train/checkpoint_every=2", "--set", "train/eval_every=0",
        "--set", "train/num_threads=1", "--set", "train/images=false",
        "--set", "eval/protocol=fast", "--set", "eval/metrics=[mig]",
        "--set", "metric=[eval/mig]", "--set", "mode=[max]",
        "--set", "resources={cpu: 1, gpu: 0}", "--set", "max_concurrent=2",
        "--set", "sampler={kind: random, seed: 1}",
    ]
    assert main(argv) == 0
    df = pd.read_parquet(tmp_path / "zoo" / "trials.parquet")
    assert len(df) == 3 and (df["status"] == "TERMINATED").all() and not df["failed"].any()
    assert set(df["config/model/name"]) <= set(MODEL_FACTS)
    assert df["eval/mig"].between(0, 1).all()
    trials = list((tmp_path / "zoo" / "ray").glob("trial_*/params.json"))
    assert len(trials) == 3
    for params in (yaml.safe_load(p.read_text())["model"] for p in trials):
        for knob, readers in KNOBS.items():  # each knob only for the models that read it
            assert (knob in params) == any(r in params["name"] for r in readers), params
