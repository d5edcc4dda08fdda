"""The configs of a run and of a sweep, read strictly (unknown keys fail with the nearest known
one).

- `tune.config.run`: `RunConfig` (model, data, train, eval, seed), "/"-paths and `--set` overrides.
- `tune.config.sweep`: `SweepSpec` (search space, budget, resources, scheduler) and its presets.

May import: `models` (config dataclasses and errors only, no torch), `search_spaces`, `yaml`,
and `analysis.trials` (the one `flatten` and `config_hash`, inside the functions that use them).
Never torch, Ray or Optuna.
"""

from tune.config.run import (  # noqa: F401  (the public names)
    DataConfig,
    EvalConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    known_paths,
    read_yaml,
    set_path,
)
