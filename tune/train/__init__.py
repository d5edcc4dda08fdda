"""The plain training run: one `RunConfig` in, losses, checkpoints, images and metrics out.

- `tune.train.loop`: `run_training` and `Run` (what a trial, `mipet-tune train` and the tests
  call).
- `tune.train.evaluation`: the model's encoder for the metrics, and the evaluation.
- `tune.train.run_checkpoint`: what a run's checkpoint holds, reading it back, and which one a
  resumed run continues from.
- `tune.train.checkpoint`: atomic checkpoint folders and the one atomic file write (no torch).
- `tune.train.scheduling`: loss-weight schedules and the lr scheduler of a run.
- `tune.train.images`: reconstructions and latent traversals (PNG grids, GIFs).
- `tune.train.command`: `mipet-tune train` (the run folder, resume, restart).

May import: torch, `models`, `tune.data`, `tune.config`, `analysis`. Never Ray or Optuna.
"""

__all__ = ["META_FILE", "Run", "TrainResult", "evaluate_model", "run_training", "seed_streams"]


def __getattr__(name: str):
    # Lazily, so that `tune.train.checkpoint` (used by the sweep driver) does not import torch.
    if name in __all__:
        from tune.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'tune.train' has no attribute {name!r}")
