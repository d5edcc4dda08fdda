"""`mipet-tune ablate`: an ablation table from a finished sweep, or an ablation grid run through
Ray without a searcher, then its table.

An ablation file::

    name: k_ablation
    base:                      # a partial run config shared by every cell
      data: {name: dsprites}
      train: {steps: 20000}
    variants:                  # optional: partial configs crossed with the grid
      - {model/name: beta_vae}
      - {model/name: mipet_vae}
    grid:                      # every combination of these values
      model/num_ipe: [1, 3, 5]
    seeds: 3                   # seeds 0..2 of every combination (one Ray trial each)
    rows: model/name
    columns: model/num_ipe
    metrics: [eval/mig, eval/factor_vae]
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 0
    storage: runs

A combination the models cannot take (for example `num_ipe > 0` for a baseline) fails before
anything runs, naming the combination.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from models.errors import ConfigError
from models.strict import from_dict, nearest
from tune.config.run import RunConfig, apply_overrides, known_paths, read_yaml, set_path
from tune.config.sweep import _NAME_OK, ResourcesSpec
from tune.sweep.floor import write_floor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AblationSpec:
    name: str = "ablation"
    base: Mapping[str, Any] = field(default_factory=dict)
    variants: tuple[Any, ...] = ()
    grid: Mapping[str, Any] = field(default_factory=dict)
    seeds: int = 1
    rows: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("eval/mig",)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    max_concurrent: int = 0
    storage: str = "runs"
    max_failures: int = 1
    table: str = "grid"  # "paper": the paper's layout (analysis.paper_table), rows model/name


    def __post_init__(self) -> None:
        if not _NAME_OK.match(self.name):
            raise ConfigError(f"name={self.name!r}: use letters, digits, '.', '_' or '-'")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.table not in ("grid", "paper"):
            raise ConfigError(f"table={self.table!r}: choose 'grid' (the ablation table) or "
                              "'paper' (the paper's layout)")
        paths = known_paths()
        for key, values in self.grid.items():
            if key not in paths:
                raise ConfigError(f"grid: unknown config path {key!r}; {nearest(key, paths)}")
            if not isinstance(values, (list, tuple)) or not values:
                raise ConfigError(f"grid: {key} needs a non-empty list of values, got {values!r}")
        for i, variant in enumerate(self.variants):
            if not isinstance(variant, Mapping):
                raise ConfigError(
                    f"variants[{i}] must be a mapping of config paths, got {variant!r}"
                )
            for key in variant:
                if key not in paths:
                    raise ConfigError(
                        f"variants[{i}]: unknown config path {key!r}; {nearest(key, paths)}"
                    )
        for key in (*self.rows, *self.columns):
            if key != "seed" and key not in paths:
                raise ConfigError(
                    f"rows/columns: unknown config path {key!r}; {nearest(key, paths)}"
                )

    @classmethod
    def load(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AblationSpec:
        raw = read_yaml(path)
        raw.setdefault("name", Path(path).stem)
        for key in ("rows", "columns", "metrics"):
            if isinstance(raw.get(key), str):
                raw[key] = [raw[key]]
        base_sets = [o for o in overrides]
        if base_sets:
            raw["base"] = apply_overrides(dict(raw.get("base") or {}), base_sets)
        return from_dict(cls, raw)

    def configs(self) -> list[RunConfig]:
        """Every (variant, grid combination, seed), validated."""
        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys))) or [()]
        out = []
        for variant in self.variants or ({},):
            for combo in combos:
                flat = dict(variant)
                flat.update(dict(zip(keys, combo, strict=True)))
                d = apply_overrides(dict(self.base), [])
                for path, value in flat.items():
                    set_path(d, path, value)
                base_seed = int(d.get("seed", 0))
                for s in range(self.seeds):
                    d["seed"] = base_seed + s
                    try:
                        out.append(RunConfig.from_dict(d))
                    except ConfigError as exc:
                        shown = ", ".join(f"{k}={v}" for k, v in flat.items())
                        raise ConfigError(f"ablation cell {{{shown}}}: {exc}") from None
        return out


def ablate(*, sweep: str | None = None, config: str | None = None,
           overrides: list[str] | tuple[str, ...] = (), out: str | None = None,
           address: str | None = None, fmt: str = "md", verbose: int = 1,
           dry_run: bool = False, throughput: list[str] | tuple[str, ...] = ()) -> str:
    """The ablation table (text in `fmt`) of a finished sweep folder or of a new ablation run;
    with `dry_run`, the cells, trial count and estimated time instead (nothing runs)."""
    if (sweep is None) == (config is None):
        raise ConfigError("give a sweep folder or --config ABLATION.yaml (not both)")
    if dry_run and config is None:
        raise ConfigError("--dry-run estimates an ablation grid: give --config ABLATION.yaml")
    if config is not None:
        spec = AblationSpec.load(config, overrides)
        if out is not None:
            spec = dataclasses.replace(spec, storage=out)
        if dry_run:
            from tune.sweep.estimate import dry_run_text

            return dry_run_text(spec, throughput)
        folder = run_ablation(spec, address=address, verbose=verbose)
        if spec.table == "paper":
            return paper_table_text(folder, spec.metrics, fmt)
        rows, columns, metrics = list(spec.rows), list(spec.columns), list(spec.metrics)
    else:
        folder = Path(sweep)
        saved = _saved_ablation(folder)
        if saved.get("table") == "paper":  # an ablation run whose file asked for the paper's
            return paper_table_text(folder, tuple(saved.get("metrics") or ()), fmt)
        rows = columns = metrics = None  # type: ignore[assignment]
    from tune.sweep.results import ablation_text

    return ablation_text(folder, rows=rows, columns=columns, metrics=metrics, fmt=fmt)


def _saved_ablation(folder: Path) -> dict[str, Any]:
    """The ablation spec a run saved in its folder's sweep.yaml, or {} (a search sweep, an old
    run, or no readable file: the plain ablation table is made then)."""
    path = folder / "sweep.yaml"  # tune.sweep.folder.SPEC_FILE, which run_ablation writes
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) and raw.get("kind") == "ablation" else {}


def paper_table_text(folder: Path, metrics: tuple[str, ...], fmt: str) -> str:
    """Write the paper's table of an ablation run (report/paper_table.md, .tex); its text."""
    from analysis import load_sweep
    from analysis.paper_table import write_paper_table

    table = write_paper_table(folder, load_sweep(folder), metrics)
    return table.to_latex() if fmt == "latex" else table.to_markdown()


def run_ablation(spec: AblationSpec, *, address: str | None = None, verbose: int = 1) -> Path:
    """Run every cell of the grid as a Ray trial (no searcher); returns the folder."""
    from tune.sweep.driver import set_ray_env
    from tune.sweep.folder import RAY_DIR, SPEC_FILE
    from tune.sweep.table import trials_table, write_trials
    from tune.sweep.tuner import ray_loggers, trial_dirname

    set_ray_env()
    configs = spec.configs()
    from tune.sweep.connect import connect
    from tune.sweep.nodes import prepare_on_all_nodes
    from tune.sweep.resources import check_resources
    from tune.sweep.storage import check_writable, resolve_storage

    folder = Path(resolve_storage(spec.storage).removeprefix("file://")) / spec.name
    if (folder / RAY_DIR).exists() and any((folder / RAY_DIR).iterdir()):
        raise ConfigError(f"{folder} already holds a run; pick another name or remove it")
    check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {k: v for k, v in dataclasses.asdict(spec).items()}
    raw["base"] = dict(spec.base)
    raw["grid"] = dict(spec.grid)
    raw["variants"] = [dict(v) for v in spec.variants]
    raw["kind"] = "ablation"
    (folder / SPEC_FILE).write_text(yaml.safe_dump(raw, sort_keys=False))

    cluster = connect(address)
    check_resources({"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
                    spec.max_concurrent or None, cluster)
    checksums = {}
    for data in {(c.data.name, c.data.source, c.data.cache_dir) for c in configs}:
        checksums[data] = prepare_on_all_nodes(*data)

    from ray import tune as ray_tune
    from ray.tune.search import BasicVariantGenerator

    from tune.sweep.trainable import train_trial

    context = {"sweep_dir": str(folder), "seeds": 1, "objectives": list(spec.metrics)}
    trainable = ray_tune.with_resources(ray_tune.with_parameters(train_trial, context=context),
                                        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    points = [c.to_dict() for c in configs]
    searcher = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=spec.max_concurrent)
    tuner = ray_tune.Tuner(
        trainable,
        param_space=points[0],  # the structure every point fills in (all have the same keys)
        tune_config=ray_tune.TuneConfig(search_alg=searcher, num_samples=len(points),
                                        reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=ray_tune.RunConfig(
            name=RAY_DIR, storage_path=str(folder), verbose=verbose,
            callbacks=ray_loggers(folder),
            failure_config=ray_tune.FailureConfig(max_failures=spec.max_failures)),
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        grid = tuner.fit()
    log.info("ablation %s: %d runs in %.1f s", spec.name, len(points), time.perf_counter() - t0)
    checksum = next(iter(checksums.values())) if len(checksums) == 1 else None
    write_trials(folder, trials_table(grid, data_checksum=checksum))
    write_floor(folder, configs)  # the untrained models, for the tables
    return folder
