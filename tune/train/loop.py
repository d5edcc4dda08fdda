"""The plain training loop: one `RunConfig` in, losses, checkpoints and metrics out. No Ray here.

`run_training` is what a Ray trial, `mipet-tune train` and the tests all call. It reports through a
callback, `report(metrics, checkpoint_dir_or_None)`, so a test can pass a list's `append` and the
trainable passes a thin wrapper around `ray.tune.report`.

Seeding: one integer per run, split with `numpy.random.SeedSequence(seed).spawn(3)` into the model
initialisation (and reparameterisation noise) stream, the data-order stream and the metrics stream.
The torch generator is seeded before the model is built (the paper code built it first, so its
seed did not control the initialisation), so the same seed gives the same losses; a checkpoint
holds every random-number state, so a resumed run goes on exactly as if it had never stopped.
The checkpoint's contents are `tune.train.run_checkpoint`; the evaluation, `tune.train.evaluation`.

The run's steps are the methods of `Run`: `setup`, `resume`, `train` (`train_step` per batch,
`interval` at each report, evaluation or checkpoint), `save`, `finish`. Before each step the
loss-weight schedules (`train.schedules`) are set on the model; after it the lr scheduler steps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from models import ModelConfig, build_model, param_groups
from models.errors import ConfigError, NonFiniteLossError, ResourceError
from tune.config.run import RunConfig
from tune.train.conditional import condition_columns, with_condition_classes
from tune.train.evaluation import Encoder, evaluate_model, finite_only
from tune.train.run_checkpoint import (
    CONFIG_FILE,
    META_FILE,
    STATE_FILE,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from tune.train.scheduling import LRStepper, WeightSchedules

log = logging.getLogger(__name__)

__all__ = [  # the evaluation and the checkpoint files live in their own modules
    "CONFIG_FILE", "META_FILE", "STATE_FILE", "Encoder", "Run", "TrainResult", "build_optimizer",
    "evaluate_model", "load_checkpoint", "load_data", "lr_lambda", "model_config_for",
    "pick_device", "run_training", "save_checkpoint", "seed_streams",
]

Report = Callable[[dict[str, Any], "Path | None"], None]
CheckpointMeta = Callable[[int, "dict[str, Any] | None"], dict[str, Any]]


@dataclass
class TrainResult:
    """What a finished run leaves: final losses and metrics, where its files are."""

    step: int
    losses: dict[str, float]
    metrics: dict[str, float]
    seconds: float
    images_per_s: float
    checkpoint: Path | None = None
    artifact_dir: Path | None = None
    train_seconds: float = 0.0  # inside training steps (not setup, evaluation or checkpoints)
    setup_seconds: float = 0.0


def seed_streams(seed: int) -> tuple[int, int, int]:
    """(init, data order, metrics) seeds from the run's one seed."""
    children = np.random.SeedSequence(seed).spawn(3)
    return tuple(int(c.generate_state(1, dtype=np.uint32)[0]) for c in children)  # type: ignore


def pick_device(requested: str, gpu_ids: list | None = None) -> torch.device:
    """The device a run uses. Under Ray, `gpu_ids` are the GPUs Ray assigned: a CPU-only trial
    never grabs a GPU, even when it can see one (Ray leaves CUDA_VISIBLE_DEVICES alone for it)."""
    if gpu_ids is not None:
        if not gpu_ids:
            if requested == "cuda":
                raise ConfigError(
                    "train.device=cuda but the trial was given no GPU (resources gpu=0)"
                )
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda:0")  # Ray restricts CUDA_VISIBLE_DEVICES to the assigned ids
        log.warning("Ray assigned GPU %s but CUDA is not available here; using the CPU", gpu_ids)
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use auto or cpu")
        return torch.device("cuda")
    if requested == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def lr_lambda(cfg: RunConfig) -> Callable[[int], float]:
    """The learning-rate factor at a step: constant (the paper's default), or linear/cosine decay
    to zero after `warmup_steps` of linear warm-up. A pure function of the step."""
    total, warm, kind = cfg.train.steps, cfg.train.warmup_steps, cfg.train.lr_schedule

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "const":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def build_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":  # the paper code's plain SGD: one group, weight decay on everything
        return torch.optim.SGD(model.main_parameters(), lr=t.lr, weight_decay=t.weight_decay)
    groups = param_groups(model, lr=t.lr, sub_lr=t.sub_lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(groups, lr=t.lr, betas=(0.9, 0.999), eps=1e-8)


def model_config_for(cfg: RunConfig, data: Any) -> ModelConfig:
    """The model config with the dataset's size (the N of the beta-TC estimator) and, for a
    conditional model, the class counts of its `condition_on` factors filled in, after checking
    that the model's input channels and conditioned factors fit the data."""
    channels = int(data.observation_shape[-1])
    if cfg.model.image_channels != channels:
        raise ConfigError(
            f"model.image_channels={cfg.model.image_channels} but dataset {cfg.data.name!r} has "
            f"{channels} channel(s); leave model.image_channels out to take the dataset's"
        )
    return with_condition_classes(dataclasses.replace(cfg.model, dataset_size=len(data)), data)


def load_data(cfg: RunConfig) -> Any:
    from tune.data import load_dataset

    return load_dataset(cfg.data.name, source=cfg.data.source, cache_dir=cfg.data.cache_dir)


def _check_finite(step: int, terms: dict[str, float]) -> None:
    bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise NonFiniteLossError(f"non-finite loss at step {step}: {shown}")


def run_training(
    cfg: RunConfig,
    *,
    report: Report | None = None,
    data: Any = None,
    resume_from: Path | None = None,
    checkpoint_root: Path | None = None,
    artifact_dir: Path | None = None,
    gpu_ids: list | None = None,
    checkpoint_meta: CheckpointMeta | None = None,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train `cfg` to `cfg.train.steps` optimizer steps, then evaluate.

    Args:
        cfg: the run.
        report: called as `report(metrics, checkpoint_dir)` every `train.report_every` steps, at
            checkpoints and at the end; `checkpoint_dir` is a complete checkpoint folder or None.
        data: an opened ground-truth dataset (default: open `cfg.data`).
        resume_from: a checkpoint folder to continue from.
        checkpoint_root: where checkpoints go (`<root>/checkpoint_<step>`); default: a temporary
            folder (the Ray trainable hands each one to Ray, which copies it to storage).
        artifact_dir: where TensorBoard scalars and the final images go (None: not written).
        gpu_ids: the GPU ids Ray assigned (None outside Ray).
        checkpoint_meta: `meta(step, final_metrics_or_None)` -> a JSON dict stored in each
            checkpoint as meta.json (the trainable keeps its per-seed bookkeeping there).
        progress: called with the step after every optimizer step (a progress bar).
    Returns:
        The final losses (means over the last report interval), metrics and timings.
    Raises:
        NonFiniteLossError: a loss or metric became NaN or infinite (never reported as a number).
        ConfigError: the configuration does not fit the data or the checkpoint.
    """
    run = Run.setup(cfg, data=data, gpu_ids=gpu_ids, checkpoint_root=checkpoint_root,
                    artifact_dir=artifact_dir, report=report, checkpoint_meta=checkpoint_meta,
                    progress=progress)
    try:
        if resume_from is not None:
            run.resume(Path(resume_from))
        run.train()
        run.finish()
    finally:
        run.close()
    return run.result()


@dataclass
class _Window:
    """The losses and images of the steps since the last report."""

    sums: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    count: int = 0
    images: int = 0
    start: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, terms: dict[str, torch.Tensor], images: int) -> None:
        for name, value in terms.items():
            v = value.detach().float()
            self.sums[name] = self.sums[name] + v if name in self.sums else v
        self.count += 1
        self.images += images

    def means(self) -> dict[str, float]:
        return {k: float(v) / self.count for k, v in self.sums.items()}


class Run:
    """One training run's live state, in the steps a reader can name: `setup` (data, model,
    optimizer, loader), `resume` (a checkpoint's states), `train` (`train_step` until the
    budget, with `interval` at each report, evaluation or checkpoint), `finish` (final metrics,
    images, the last checkpoint and report) and `result`.

    What a checkpoint holds is `state()`; what each step optimises is `train_step`."""

    def __init__(self, cfg: RunConfig, *, data: Any, device: torch.device, model: torch.nn.Module,
                 loader: Any, checkpoint_root: Path | None, artifact_dir: Path | None,
                 report: Report | None, checkpoint_meta: CheckpointMeta | None,
                 seeds: tuple[int, int, int], t0: float,
                 progress: Callable[[int], None] | None = None) -> None:
        self.cfg, self.data, self.device, self.model, self.loader = (
            cfg, data, device, model, loader
        )
        self.optimizer = build_optimizer(cfg, model)
        self.adversaries = model.build_adversaries()  # their own optimizers; empty for most models
        self.scheduler = LRStepper(cfg, self.optimizer, lr_lambda(cfg))
        self.schedules = WeightSchedules(cfg)
        self.metric_seed = seeds[2]
        self.report = report or (lambda metrics, checkpoint: None)
        self.checkpoint_meta = checkpoint_meta
        self.progress = progress
        self._own_tmp = None
        if checkpoint_root is None:
            import tempfile

            self._own_tmp = tempfile.TemporaryDirectory(prefix="mipet-ckpt-")
            checkpoint_root = Path(self._own_tmp.name)
        self.checkpoint_root = Path(checkpoint_root)
        self.checkpoint_root.mkdir(parents=True, exist_ok=True)
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.writer = _summary_writer(artifact_dir)
        self.autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16)
                         if cfg.train.precision == "bf16" else nullcontext())
        self.step = self.start_step = 0
        self.history: dict[str, Any] = {"fast": {}}
        self.window = _Window()
        self.last_losses: dict[str, float] = {}
        self.final_report: dict[str, Any] = {"step": 0}
        self.eval_metrics: dict[str, float] = {}
        self.last_ckpt: Path | None = None
        self.t0, self.train_seconds = t0, 0.0
        self.setup_seconds = time.perf_counter() - t0

    # ---- setup and resume ----------------------------------------------------------------
    @classmethod
    def setup(cls, cfg: RunConfig, *, data: Any = None, gpu_ids: list | None = None,
              **kwargs: Any) -> Run:
        """Open the data, seed torch, build the model, optimizer, scheduler and loader."""
        t0 = time.perf_counter()
        seeds = seed_streams(cfg.seed)
        device = pick_device(cfg.train.device, gpu_ids)
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        data = data if data is not None else load_data(cfg)
        if cfg.train.batch_size > len(data):
            raise ConfigError(
                f"train.batch_size={cfg.train.batch_size} is larger than dataset "
                f"{cfg.data.name!r} ({len(data)} images); give at most {len(data)}"
            )
        mcfg = model_config_for(cfg, data)
        torch.manual_seed(seeds[0])
        model = build_model(mcfg).to(device)
        columns = condition_columns(mcfg, data)  # a conditional model's batches carry classes
        loader = data.loader(cfg.train.batch_size, seed=seeds[1], device=str(device),
                             **({} if columns is None else {"labels": columns}))
        return cls(cfg, data=data, device=device, model=model, loader=loader, seeds=seeds, t0=t0,
                   **kwargs)

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds besides the config and the random-number states."""
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "adversaries": self.model.adversary_state_dict(),  # e.g. Factor-VAE's discriminator
            "scheduler": self.scheduler.state_dict(),
            "loader": self.loader.state_dict(),
            "history": self.history,
        }

    def resume(self, folder: Path) -> None:
        """Continue from a checkpoint of this configuration and seed."""
        state = load_checkpoint(folder, self.cfg)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.adversaries.load_state_dict(state.get("adversaries", {}))
        self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"])
        set_rng_state(state["rng"])
        self.step = self.start_step = int(state["step"])
        self.final_report = {"step": self.step}
        self.history = state.get("history", self.history)
        self.setup_seconds = time.perf_counter() - self.t0
        log.info("resumed at step %d from %s", self.step, folder)

    # ---- training ------------------------------------------------------------------------
    def train(self) -> None:
        """Optimizer steps until `train.steps`, with reports, evaluations and checkpoints."""
        t = self.cfg.train
        self.window = _Window()
        self.model.train()
        while self.step < t.steps:
            self.train_step(next(self.loader))
            if self.progress is not None:
                self.progress(self.step)
            due_report = self.step % t.report_every == 0 or self.step == t.steps
            due_ckpt = self.step % t.checkpoint_every == 0 or self.step == t.steps
            due_eval = bool(t.eval_every) and self.step % t.eval_every == 0 and self.step < t.steps
            if due_report or due_ckpt or due_eval:
                self.interval(evaluate=due_eval, checkpoint=due_ckpt and self.step < t.steps)

    def train_step(self, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> None:
        """One optimizer step on the batch (images `x`, or `(x, classes)` for a conditional
        model) at step `self.step` (then counted): the scheduled loss weights of this step,
        forward, backward, the optimizer and lr scheduler steps."""
        x, labels = batch if isinstance(batch, tuple) else (batch, None)
        if self.schedules:
            self.model.set_loss_weights(self.schedules.values(self.step))
        with self.autocast:
            if labels is None:
                out = self.model(x, step=self.step)
            else:
                out = self.model(x, step=self.step, labels=labels)
        loss = out.loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.max_grad_norm)
        self.optimizer.step()
        out.terms.update(self.adversaries.step(out))  # after the main step, on its detached z
        self.scheduler.step(loss, out.terms)
        self.step += 1
        terms = out.terms if "loss" in out.terms else {**out.terms, "loss": loss}
        self.window.add(terms, x.shape[0])

    def interval(self, *, evaluate: bool, checkpoint: bool) -> None:
        """The end of a report interval: mean losses, optional fast metrics, TensorBoard, an
        optional checkpoint, and the report (the last step's report waits for `finish`)."""
        losses = self.window.means()
        _check_finite(self.step, losses)
        elapsed = time.perf_counter() - self.window.start
        self.train_seconds += elapsed
        metrics: dict[str, Any] = {"step": self.step, "lr": self.scheduler.lr,
                                   "images_per_s": self.window.images / max(elapsed, 1e-9),
                                   "train_seconds": self.train_seconds,
                                   "setup_seconds": self.setup_seconds}
        metrics.update({f"train/{k}": v for k, v in losses.items()})
        metrics.update(self.schedules.logged(self.step - 1))  # what the last step trained with
        self.last_losses = losses
        if evaluate:
            fast = evaluate_model(self.model, self.data, self.cfg, self.device, protocol="fast",
                                  metrics=self.cfg.eval.fast_metrics, seed=self.metric_seed)
            metrics.update(finite_only("fast", fast))
            self.history["fast"][self.step] = fast
            self.pictures(f"images/step_{self.step:08d}")
        self.log_scalars(metrics)
        ckpt = self.save(None) if checkpoint else None
        if self.step < self.cfg.train.steps:
            self.report(metrics, ckpt)
        else:
            self.final_report = metrics
        self.window = _Window()

    def log_scalars(self, metrics: dict[str, Any]) -> None:
        if self.writer is not None:
            for k, v in metrics.items():
                if k != "step":
                    self.writer.add_scalar(k, v, self.step)

    def save(self, final: dict[str, Any] | None) -> Path:
        """A checkpoint at this step (`final`: the run's last report, for the caller's meta)."""
        meta = self.checkpoint_meta(self.step, final) if self.checkpoint_meta else None
        folder = self.checkpoint_root / f"checkpoint_{self.step:08d}"
        try:
            self.last_ckpt = save_checkpoint(folder, self.cfg, self.state(), meta)
        except OSError as exc:  # a full disk, a folder made read-only: one line, not a trace
            raise ResourceError(
                f"{folder}: cannot write the checkpoint ({exc.strerror or exc})"
            ) from exc
        return self.last_ckpt

    # ---- the end -------------------------------------------------------------------------
    def finish(self) -> None:
        """Final metrics, images, the final checkpoint and one last report."""
        cfg = self.cfg
        final: dict[str, Any] = dict(self.final_report)
        if cfg.eval.protocol != "none":
            self.eval_metrics = evaluate_model(
                self.model, self.data, cfg, self.device, protocol=cfg.eval.protocol,
                metrics=cfg.eval.metrics or None, seed=self.metric_seed)
            final.update(finite_only("eval", self.eval_metrics))
        self.pictures(".")
        if self.writer is not None:
            eval_scalars = finite_only("eval", self.eval_metrics)
            for k, v in eval_scalars.items():
                self.writer.add_scalar(k, v, self.step)
            write_hparams(self.writer, cfg, {**eval_scalars, **{
                f"train/{k}": v for k, v in self.last_losses.items()}})
            self.writer.flush()
        self.report(final, self.save(final))

    def pictures(self, sub: str) -> None:
        """Reconstructions and traversals (PNG, GIF) into the run's folder `sub` and, as images,
        into TensorBoard (tags `images/<name>`)."""
        if self.artifact_dir is None or not self.cfg.train.images:
            return
        from tune.train.images import write_images

        pics = write_images(self.model, self.data, self.artifact_dir / sub, device=self.device,
                            seed=self.metric_seed, steps=self.cfg.train.traversal_steps,
                            range_=self.cfg.train.traversal_range)
        if self.writer is not None:
            for name, image in pics.images.items():
                if name != "traversal":  # the same picture as the first reference's
                    self.writer.add_image(f"images/{name}", image, self.step, dataformats="HWC")

    def close(self) -> None:
        """Close the TensorBoard writer and remove a temporary checkpoint folder."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._own_tmp is not None:
            self._own_tmp.cleanup()

    def result(self) -> TrainResult:
        total_images = (self.step - self.start_step) * self.cfg.train.batch_size
        return TrainResult(
            step=self.step,
            losses=self.last_losses,
            metrics=self.eval_metrics,
            seconds=time.perf_counter() - self.t0,
            images_per_s=total_images / max(self.train_seconds, 1e-9),
            checkpoint=self.last_ckpt if self._own_tmp is None else None,  # gone with the tmp
            artifact_dir=self.artifact_dir,
            train_seconds=self.train_seconds,
            setup_seconds=self.setup_seconds,
        )


def write_hparams(writer: Any, cfg: RunConfig, final: dict[str, float]) -> None:
    """The run's hyperparameters (its flat config) and final metrics as an HParams summary in
    the run's own event file, so TensorBoard's HParams dashboard lists each run once (the
    writer's `add_hparams` would write a second run). The metrics' values are the scalars of
    the same tags the run already logged."""
    from torch.utils.tensorboard.summary import hparams

    params: dict[str, Any] = {}
    for key, value in cfg.flat().items():
        if key.startswith("data/") and key != "data/name" or value is None:
            continue
        params[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    exp, ssi, sei = hparams(params, {k: float(v) for k, v in final.items()})
    for summary in (exp, ssi, sei):
        writer.file_writer.add_summary(summary)


def _summary_writer(artifact_dir: Path | None):
    if artifact_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; be tolerant of a broken install
        log.warning("tensorboard is not importable; no TensorBoard scalars are written")
        return None
    Path(artifact_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(Path(artifact_dir) / "tb"))
