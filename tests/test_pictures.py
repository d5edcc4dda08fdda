"""Traversal GIFs and grids, and what a run writes to TensorBoard (read back with its reader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_run_dict

from tune.config.run import RunConfig
from tune.train.loop import run_training


@pytest.fixture(scope="module")
def run_dir(dsprites, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    cfg = RunConfig.from_dict(tiny_run_dict(
        model={"name": "beta_vae", "num_ipe": 0, "latent_dim": 3},
        train={"images": True, "eval_every": 3, "traversal_steps": 5,
               "schedules": {"model/beta": {"kind": "linear", "start": 0, "end": 2, "steps": 6}}},
        eval={"protocol": "fast", "metrics": ["mig"], "fast_metrics": ["mig"]}))
    run_training(cfg, data=dsprites, artifact_dir=folder)
    return folder


def test_gif_has_one_frame_per_traversal_step_and_the_grid_size(run_dir: Path) -> None:
    from PIL import Image

    for gif in (run_dir / "traversal.gif", run_dir / "images/step_00000003/traversal.gif"):
        with Image.open(gif) as im:
            assert im.n_frames == 5
            # a column per latent (3), a row per image (3 references + 3 random), 64 px tiles
            # with 2 px padding, and a 4 px progress strip below
            assert im.size == (3 * 66 + 2, 6 * 66 + 2 + 4)
    with Image.open(run_dir / "traversal_heart.png") as im:
        assert im.size == (5 * 66 + 2, 3 * 66 + 2)  # a row per latent, a column per value
    with Image.open(run_dir / "reconstruction.png") as im:
        assert im.size == (6 * 66 + 2, 2 * 66 + 2)


def test_reference_images_are_a_square_an_ellipse_and_a_heart(dsprites) -> None:
    from tune.train.images import reference_images

    names, idx = reference_images(dsprites, seed=0)
    assert names[:3] == ["square", "ellipse", "heart"]
    assert list(dsprites.factors_of(idx[:3])[:, 0]) == [0, 1, 2]
    assert names == reference_images(dsprites, seed=0)[0] and len(set(idx)) == 6


def test_data_range_traversal_spans_the_codes(dsprites) -> None:
    import models
    from tune.data import model_defaults
    from tune.train.images import traversal_values

    torch.manual_seed(0)
    model = models.build_model(models.ModelConfig.from_dict(
        {"name": "beta_vae", "latent_dim": 2, **model_defaults("dsprites")})).eval()
    mu = torch.zeros(1, 2)
    fixed = traversal_values(model, dsprites, mu, 4, range_="fixed", seed=0)
    assert torch.allclose(fixed[:, 0], torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0]))
    with torch.no_grad():
        data = traversal_values(model, dsprites, mu, 4, range_="data", seed=0)
    assert data.shape == (4, 2) and not torch.allclose(data, fixed)
    assert bool((data[-1] > data[0]).all())


def test_tensorboard_holds_images_scalars_and_one_hparams_run(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(run_dir.rglob("events.out.tfevents.*"))
    assert len(events) == 1  # one run: the hparams summary is in the scalars' own file
    acc = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"images/reconstruction", "images/traversal_square", "images/traversal_heart"} <= set(
        tags["images"])
    assert [e.step for e in acc.Images("images/traversal_square")] == [3, 6]
    assert {"train/loss", "lr", "schedule/model/beta", "fast/mig", "eval/mig"} <= set(
        tags["scalars"])
    beta = [e.value for e in acc.Scalars("schedule/model/beta")]
    assert np.allclose(beta, [2 * 2 / 6, 2 * 5 / 6])  # the values of steps 2 and 5 (0-based)
    hp = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hp and "_hparams_/session_start_info" in hp
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["model/name"].string_value == "beta_vae"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hp["_hparams_/experiment"])
    assert "eval/mig" in {m.name.tag for m in experiment.experiment.metric_infos}


def test_the_sweep_report_shows_the_gifs_of_the_best_trials(tmp_path: Path) -> None:
    from _synthetic import synthetic_trials, write_sweep

    from analysis.rank import rank
    from analysis.report import write_report
    from analysis.sweep import load_sweep
    from tune.train.images import save_gif

    folder = write_sweep(synthetic_trials(n_seeds=1, broken=False), tmp_path / "s", images=True)
    df = load_sweep(folder)
    best = rank(df, "mig").iloc[0]["best_trial"]
    adir = Path(df.loc[df["trial_id"] == best, "artifact_dir"].iloc[0])
    save_gif(adir / "traversal.gif", [np.full((8, 8, 3), v, np.float32) for v in (0.0, 1.0)])
    write_report(folder, by="mig", top=2)
    md = (folder / "report/index.md").read_text()
    assert f"![#1: trial {best}](gifs/1_{best}.gif)" in md
    assert (folder / f"report/gifs/1_{best}.gif").read_bytes()[:6] == b"GIF89a"
    assert "data:image/gif;base64," in (folder / "report/index.html").read_text()
