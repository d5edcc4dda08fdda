"""analysis.export: the best trial's complete config, its metrics and provenance, as YAML."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
import yaml
from _synthetic import table

from analysis.errors import AnalysisError
from analysis.export import best_config, export_best


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


def test_model_fields_keep_only_what_the_model_reads() -> None:
    df = table([run("m", 1, 4.0, 0, 0.3, **{"config/model/loss_terms": "('dip',)",
                                          "config/model/capacity_max": 25.0})])
    asked = []

    def reads(name, loss_terms):
        asked.append((name, list(loss_terms)))
        return {"beta", "loss_terms"}

    doc = best_config(df, model_fields=reads)
    assert asked == [("m", ["dip"])]
    assert doc["model"] == {"name": "m", "beta": 4, "loss_terms": ["dip"]}
    everything = best_config(df)["model"]  # analysis alone knows no model: every field
    assert {"num_ipe", "latent_dim", "capacity_max"} <= set(everything)


def _one_trial_sweep(folder, model: dict):
    """A sweep folder whose one trial ran `model`, its row built as the sweep engine builds it
    (the resolved RunConfig, every field); returns that RunConfig."""
    import pandas as pd

    from analysis.trials import trial_rows
    from tune.config.run import RunConfig

    cfg = RunConfig.from_dict({"model": {"latent_dim": 4, **model}, "data": {"name": "dsprites"},
                               "train": {"steps": 50}, "seed": 3})
    rows = trial_rows(trial_id="t000", config=cfg.to_dict(), resolved=cfg.to_dict(), over=True,
                      reports=[{"eval/mig": 0.4, "step": 50, "seed": 3, "done": True,
                                "config_id": cfg.config_id()}])
    pd.DataFrame(rows).to_parquet(folder / "trials.parquet")
    return cfg


def _unread_in(path, cfg) -> set[str]:
    from models import used_fields

    written = set(yaml.safe_load(path.read_text())["model"]) - {"name"}
    return written - used_fields(cfg.model.name, cfg.model.loss_terms)


@pytest.mark.parametrize("model", [
    {"name": "betatcvae", "beta": 6.0, "tc_estimator": "mss"},
    {"name": "mipet_commutative", "hy_rec": 0.3, "latent_dim": 10},
    {"name": "factor_vae", "factor_gamma": 20.0, "loss_terms": ["dip_vae_i"]},
    {"name": "cvae", "condition_on": ["shape", "scale"]},
])
def test_the_exported_file_reloads_as_the_trials_config(tmp_path, model: dict) -> None:
    """Through the CLI's export (tune hands analysis `models.used_fields`): the file holds no
    field the model does not read, and reading it gives the trial's RunConfig back."""
    from tune.config.run import RunConfig
    from tune.sweep.results import export

    cfg = _one_trial_sweep(tmp_path, model)
    path = export(tmp_path)
    assert _unread_in(path, cfg) == set()
    dropped = set(cfg.to_dict()["model"]) - set(yaml.safe_load(path.read_text())["model"])
    assert dropped  # e.g. betatcvae: capacity_max, dip_lambda_od, info_alpha, ifc_w_le
    assert RunConfig.from_yaml(path) == cfg


def test_the_report_writes_the_same_trimmed_file(tmp_path) -> None:
    """`mipet-tune report` rewrites report/best_config.yaml; it too leaves out unread fields."""
    from tune.sweep.results import report

    cfg = _one_trial_sweep(tmp_path, {"name": "betatcvae", "beta": 6.0})
    index = report(tmp_path)
    path = index.parent / "best_config.yaml"
    assert _unread_in(path, cfg) == set()
    model = yaml.safe_load(path.read_text())["model"]
    assert "capacity_max" not in model and model["beta"] == 6
