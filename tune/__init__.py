"""mipet-tune's engine, in layers; each subpackage imports only the ones listed before it.

- `tune.data`: the datasets (numpy, h5py; torch only in the batch loader; never Ray).
- `tune.config`: the run config and the sweep spec, read strictly from YAML or `--set` (models
  and search_spaces; no torch, no Ray).
- `tune.train`: the plain training run: the loop, checkpoints, images, `mipet-tune train` (torch;
  no Ray).
- `tune.sweep`: the sweep engine: driver, function trainable, Optuna searcher, ablation grid,
  cluster helpers. The only layer that imports Ray.
- `tune.cli`: the `mipet-tune` command line; it imports the layers above inside each command, so
  `mipet-tune --help` is instant.

Importing `tune` itself imports nothing.
"""
