"""`SchedulerSpec`: the `scheduler:` section of a sweep (none, ASHA, PBT, PB2), read strictly and
checked against the sweep's base run config before Ray starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from models.errors import ConfigError
from models.strict import nearest
from tune.config.run import RunConfig, known_paths


@dataclass(frozen=True)
class SchedulerSpec:
    """What acts on trials while they train, by Ray Tune's schedulers (Optuna's pruners are not
    used by OptunaSearch):

    - `asha`: early stopping over training steps (`grace_period`, `reduction_factor`).
    - `pbt`: population-based training: every `perturbation_interval` steps a trial in the
      bottom `quantile_fraction` copies the whole training state of one in the top fraction
      and perturbs its `mutations` (search-space notation: `{low, high, log}` ranges or
      `{choices: [...]}`); `resample_probability` draws afresh instead, `perturbation_factors`
      scale a range's value (clipped into the range). Asynchronous by default (a trial acts
      when it reaches the interval, against the others' latest scores); `synch: true` waits for
      the whole population at every interval.
    - `pb2`: the same with GP-bandit explore steps inside `bounds` (`{path: [low, high]}`).

    `metric` is what the scheduler compares, a value reported during training: a loss
    (`train/loss`, `train/rec`, ...) or a `fast/<metric>` evaluated every `train.eval_every`
    steps."""

    kind: Literal["none", "asha", "pbt", "pb2"] = "none"
    metric: str = "train/loss"
    mode: Literal["min", "max"] = "min"
    grace_period: int = 0  # asha: steps; 0 = a tenth of train.steps
    reduction_factor: int = 3  # asha
    perturbation_interval: int = 0  # pbt/pb2: steps between perturbations
    mutations: dict[str, Any] = field(default_factory=dict)  # pbt: {path: range or choices}
    bounds: dict[str, Any] = field(default_factory=dict)  # pb2: {path: [low, high]}
    quantile_fraction: float = 0.25  # pbt/pb2
    resample_probability: float = 0.25  # pbt
    perturbation_factors: tuple[float, ...] = (1.2, 0.8)  # pbt
    time_attr: Literal["step"] = "step"  # pbt/pb2: perturbations are counted in optimizer steps
    synch: bool = False  # pbt/pb2: perturb the whole population at once (each waits for all)

    def __post_init__(self) -> None:
        if self.reduction_factor < 2:
            raise ConfigError(
                f"scheduler.reduction_factor must be >= 2, got {self.reduction_factor}"
            )
        if self.grace_period < 0:
            raise ConfigError(f"scheduler.grace_period must be >= 0, got {self.grace_period}")
        if not (self.metric.startswith("train/") or self.metric.startswith("fast/")):
            raise ConfigError(
                f"scheduler.metric={self.metric!r}: {self.kind} needs a value reported during "
                "training, train/<loss term> or fast/<metric>"
            )
        self._check_keys_of_kind()
        if self.kind in ("pbt", "pb2"):
            self._check_population()

    @property
    def population_based(self) -> bool:
        return self.kind in ("pbt", "pb2")

    def _check_keys_of_kind(self) -> None:
        """Refuse a key that another kind of scheduler reads (set away from its default)."""
        default = {f.name: f for f in dataclasses.fields(SchedulerSpec)}
        readers = {"grace_period": ("asha",), "reduction_factor": ("asha",),
                   "perturbation_interval": ("pbt", "pb2"), "mutations": ("pbt",),
                   "bounds": ("pb2",), "quantile_fraction": ("pbt", "pb2"),
                   "resample_probability": ("pbt",), "perturbation_factors": ("pbt",),
                   "synch": ("pbt", "pb2")}
        for key, kinds in readers.items():
            f = default[key]
            value = f.default_factory() if f.default_factory is not dataclasses.MISSING else (
                f.default)
            if self.kind not in kinds and getattr(self, key) != value:
                raise ConfigError(
                    f"scheduler.{key} is read by kind {' or '.join(kinds)}, not by "
                    f"kind {self.kind!r}; remove it or set scheduler.kind"
                )

    def _check_population(self) -> None:
        if self.perturbation_interval < 1:
            raise ConfigError(
                f"scheduler.perturbation_interval must be >= 1 step for {self.kind}, got "
                f"{self.perturbation_interval}"
            )
        if not 0 < self.quantile_fraction <= 0.5:
            raise ConfigError(
                f"scheduler.quantile_fraction must be in (0, 0.5], got {self.quantile_fraction}"
            )
        if not 0 <= self.resample_probability <= 1:
            raise ConfigError(f"scheduler.resample_probability must be in [0, 1], got "
                              f"{self.resample_probability}")
        if not self.perturbation_factors or any(not f > 0 for f in self.perturbation_factors):
            raise ConfigError(f"scheduler.perturbation_factors must be positive numbers, got "
                              f"{list(self.perturbation_factors)}")
        if self.kind == "pb2":
            import importlib.util

            if importlib.util.find_spec("sklearn") is None:
                raise ConfigError("scheduler.kind=pb2 needs scikit-learn (Ray's PB2 fits its "
                                  "GP with it): pip install scikit-learn, or use kind pbt")
        paths = known_paths()
        for path in self.searched:  # every path is a settable run-config path
            if path not in paths:
                raise ConfigError(f"scheduler.{self.perturbed_key}: {path!r} is not a run-config "
                                  f"path; {nearest(path, paths)}")
        self.mutation_ranges()  # parses (and so checks) mutations or bounds

    @property
    def perturbed_key(self) -> str:
        """The key that lists the perturbed paths: `mutations` (pbt) or `bounds` (pb2)."""
        return "mutations" if self.kind == "pbt" else "bounds"

    @property
    def searched(self) -> tuple[str, ...]:
        """The run-config paths the scheduler perturbs ("/"-paths)."""
        raw = self.mutations if self.kind == "pbt" else self.bounds
        return tuple(str(k).replace(".", "/") for k in (raw or {}))

    def mutation_ranges(self) -> Any:
        """The perturbed parameters as a `search_spaces.SearchSpace` (no fixed values): pbt's
        `mutations` as written, pb2's `bounds` as float ranges.

        Raises:
            ConfigError: empty, a bad range or choices, a `when` condition.
        """
        from search_spaces import SearchSpace

        raw = self.mutations if self.kind == "pbt" else self.bounds
        if not isinstance(raw, Mapping) or not raw:
            example = ("{model/beta: {low: 1.0, high: 16.0, log: true}}" if self.kind == "pbt"
                       else "{model/beta: [1.0, 16.0]}")
            raise ConfigError(f"scheduler.{self.perturbed_key} must name at least one parameter "
                              f"to perturb, such as {example}; got {raw!r}")
        params: dict[str, Any] = {}
        for path, spec in raw.items():
            if self.kind == "pb2":
                spec = _pb2_bound(str(path), spec)
            elif isinstance(spec, Mapping) and "when" in spec:
                raise ConfigError(f"scheduler.mutations: {path}: a mutation has no `when` "
                                  "condition; every member of the population perturbs it")
            params[str(path)] = spec
        return SearchSpace.from_dict({"params": params}, name=f"scheduler.{self.perturbed_key}")

    def check_run(self, base: RunConfig) -> None:
        """What a population-based scheduler needs of the trials' run config (one line each):
        perturbations on checkpointed steps with the metric reported there, and perturbed paths
        that may change while a run trains."""
        if not self.population_based:
            return
        t, kind, n = base.train, self.kind, self.perturbation_interval
        if n < t.report_every:
            raise ConfigError(
                f"scheduler.perturbation_interval={n} is below train/report_every="
                f"{t.report_every}: {kind} acts on reported steps; give a multiple of "
                f"{t.checkpoint_every}"
            )
        if n % t.checkpoint_every:
            raise ConfigError(
                f"scheduler.perturbation_interval={n} must be a multiple of "
                f"train/checkpoint_every={t.checkpoint_every}: an exploit copies the checkpoint "
                "of the step it perturbs at"
            )
        if n >= t.steps:
            raise ConfigError(
                f"scheduler.perturbation_interval={n} leaves no perturbation in "
                f"train/steps={t.steps}; give fewer steps than the run trains"
            )
        if self.metric.startswith("fast/"):
            from analysis.metrics.registry import METRIC_KEYS

            fast = sorted(f"fast/{k}" for name in base.eval.fast_metrics
                          for k in METRIC_KEYS[name])
            if self.metric not in fast:
                raise ConfigError(
                    f"scheduler.metric={self.metric!r} is not computed during training by "
                    f"eval/fast_metrics={list(base.eval.fast_metrics)}; it gives "
                    f"{', '.join(fast) or 'nothing'}"
                )
            if not t.eval_every or n % t.eval_every:
                raise ConfigError(
                    f"scheduler.metric={self.metric!r} must be evaluated at every perturbation: "
                    f"set train/eval_every to a divisor of {n} (it is {t.eval_every})"
                )
        mutable = mutable_paths(base)
        for path in self.searched:
            if path in base.train.schedules:
                raise ConfigError(
                    f"scheduler.{self.perturbed_key}: {path!r} has a schedule in "
                    "train/schedules, which would override every perturbation; remove one of them"
                )
            if path not in mutable:
                raise ConfigError(
                    f"scheduler.{self.perturbed_key}: {path!r} cannot change while a run trains "
                    f"(an exploit restores the model and optimizer); {kind} perturbs "
                    f"{', '.join(mutable)}"
                )


# What may change between a checkpoint and the run that continues from it after a PBT exploit:
# the optimizer's numbers (applied to its parameter groups on restore) and the model's loss
# weights (which `VAE.set_loss_weights` also changes during training).
MUTABLE_TRAIN_PATHS = ("train/lr", "train/sub_lr", "train/weight_decay", "train/max_grad_norm")


def mutable_paths(base: RunConfig) -> list[str]:
    """The paths a population-based scheduler may perturb for the model of `base`."""
    from models import loss_weight_fields

    weights = loss_weight_fields(base.model.name, base.model.loss_terms)
    return sorted(f"model/{w}" for w in weights) + list(MUTABLE_TRAIN_PATHS)


def _pb2_bound(path: str, spec: Any) -> dict[str, Any]:
    """A pb2 bound, `[low, high]` or `{low: .., high: ..}`, as a float range."""
    if isinstance(spec, Mapping) and set(spec) <= {"low", "high"} and len(spec) == 2:
        spec = [spec["low"], spec["high"]]
    if not (isinstance(spec, (list, tuple)) and len(spec) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)):
        raise ConfigError(f"scheduler.bounds: {path}: expected [low, high] (two numbers; PB2 "
                          f"explores continuous values), got {spec!r}")
    return {"low": float(spec[0]), "high": float(spec[1])}
