"""analysis.export: the best trial's complete config, its metrics and provenance, as YAML."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import yaml

from analysis.errors import AnalysisError
from analysis.export import best_config, export_best
from _synthetic import table


def run(name: str, k: float, beta: float, seed: int, mig: float, **kw: object) -> dict:
    return {
        "config/model/name": name,
        "config/model/num_ipe": k,
        "config/model/beta": beta,
        "config/model/latent_dim": 10,
        "config/data/name": "dsprites",
        "config/data/source": None,
        "config/train/steps": 50,
        "config/train/lr": 4e-4,
        "config/train/weight_decay": 0.0,
        "config/eval/metrics": kw.pop("metrics", np.array(["mig", "dci"])),
        "config/eval/protocol": "dlib",
        "seed": seed,
        "config/seed": seed,
        "eval/mig": mig,
        "train/loss": 100.0 - mig,
        "step": 50,
        **kw,
    }


def expected_version() -> str | None:
    try:
        return metadata.version("mipet-tune")
    except metadata.PackageNotFoundError:
        return None


def test_complete_config_of_the_best_trial(tmp_path) -> None:
    df = table(
        [
            run("beta_vae", np.nan, 4.0, 0, 0.50),  # best config, but its num_ipe is absent
            run("beta_vae", np.nan, 4.0, 1, 0.70),  # its best seed
            run("mipet_vae", 3, 1.0, 0, 0.40),
            run("mipet_vae", 3, 16.0, 0, 0.99, status="ERROR", failed=True),
        ]
    )
    df["data_checksum"] = "sha256:abc"
    path = export_best(df, tmp_path / "out" / "best.yaml", by="mig", sweep_folder="/sweeps/s1")
    text = path.read_text()
    assert text.startswith("# Best configuration")
    doc = yaml.safe_load(text)
    assert list(doc) == ["model", "data", "train", "eval", "seed", "metrics", "provenance"]
    assert doc["model"] == {"name": "beta_vae", "beta": 4, "latent_dim": 10}  # no num_ipe
    assert isinstance(doc["model"]["latent_dim"], int)
    assert doc["data"] == {"name": "dsprites"}  # a null field is left to its default
    assert doc["train"] == {"steps": 50, "lr": 4e-4, "weight_decay": 0.0}
    assert doc["eval"] == {"metrics": ["mig", "dci"], "protocol": "dlib"}
    assert doc["seed"] == 1  # the seed with MIG 0.7
    m = doc["metrics"]
    assert m["ranked_by"] == ["eval/mig"] and m["rank"] == 1 and m["of_configurations"] == 2
    assert m["trial"]["eval/mig"] == pytest.approx(0.7)
    assert m["trial"]["train/loss"] == pytest.approx(99.3)
    assert m["over_seeds"]["eval/mig"]["mean"] == pytest.approx(0.6)
    assert m["over_seeds"]["eval/mig"]["n"] == 2
    p = doc["provenance"]
    assert p["sweep"] == "/sweeps/s1" and p["trial_id"] == "t001" and p["seed"] == 1
    assert p["config_id"] == df.loc[1, "config_id"]
    assert p["dataset"] == "dsprites" and p["data_checksum"] == "sha256:abc"
    assert p["package"] == "mipet-tune" and p["package_version"] == expected_version()


def test_a_folder_gets_best_config_yaml_and_tuples_as_strings_become_lists(tmp_path) -> None:
    df = table(
        [
            run("a", 1, 1.0, 0, 0.3, metrics="('mig', 'sap')"),
            run("b", 1, 1.0, 0, 0.1, metrics="('mig', 'sap')"),
        ]
    )
    path = export_best(df, tmp_path)
    assert path == tmp_path / "best_config.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["eval"]["metrics"] == ["mig", "sap"]
    assert doc["model"]["name"] == "a"


def test_several_metrics_export_the_top_of_the_mean_rank() -> None:
    df = table(
        [
            run("a", 1, 1.0, 0, 0.9, **{"train/recon": 50.0}),
            run("b", 1, 2.0, 0, 0.8, **{"train/recon": 10.0}),
            run("c", 1, 3.0, 0, 0.1, **{"train/recon": 60.0}),
        ]
    )
    doc = best_config(df, by=["mig", "recon"])
    assert doc["model"]["name"] in {"a", "b"}
    assert doc["metrics"]["direction"] == {"eval/mig": "max", "train/recon": "min"}


def test_bad_input_is_one_clear_error(tmp_path) -> None:
    df = table([run("a", 1, 1.0, 0, 0.3)])
    with pytest.raises(AnalysisError, match="unknown metric 'migg'"):
        export_best(df, tmp_path, by="migg")
    dead = table([run("a", 1, 1.0, 0, 0.3, status="ERROR", failed=True)])
    with pytest.raises(AnalysisError, match="no finished trial"):
        export_best(dead, tmp_path)
