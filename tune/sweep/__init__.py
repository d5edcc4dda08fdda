"""The sweep engine: the only layer of mipet-tune that imports Ray.

- `tune.sweep.driver`: `run_sweep`, a `SweepSpec` in, a sweep folder out.
- `tune.sweep.trainable`: the function trainable that runs a trial's seeds through `tune.train`.
- `tune.sweep.searcher`: `SafeOptunaSearch`, the Optuna searcher that survives restores.
- `tune.sweep.study`, `.journal`, `.reconcile`: where the study lives (and the refusal of a
  damaged journal), its append-only journal for optuna-dashboard, its reconciliation with
  Tune's trials after `fit()` (these three import no Ray).
- `tune.sweep.folder`: the sweep-folder marker and the one-driver-per-folder lock.
- `tune.sweep.callbacks`: the Tune Callback that writes a trial's rows as it ends.
- `tune.sweep.ablate`: ablation grids run through Ray without a searcher.
- `tune.sweep.connect`, `.resources`, `.storage`, `.nodes`: joining a cluster, checking resource
  requests, resolving the storage, preparing the data on every node.

May import: Ray, Optuna, and every layer before it (`tune.data`, `tune.config`, `tune.train`),
`models`, `search_spaces`, `analysis`. Ray is imported inside functions where a module is also
used by the CLI, so `mipet-tune --help` stays instant.
"""
