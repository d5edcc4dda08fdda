"""The plain training loop: one `RunConfig` in, losses, checkpoints and metrics out. No Ray here.

`run_training` is what a Ray trial, `mipet-tune train` and the tests all call. It reports through a
callback, `report(metrics, checkpoint_dir_or_None)`, so a test can pass a list's `append` and the
trainable passes a thin wrapper around `ray.tune.report`.

Seeding: one integer per run, split with `numpy.random.SeedSequence(seed).spawn(3)` into the model
initialisation (and reparameterisation noise) stream, the data-order stream and the metrics stream.
The torch generator is seeded before the model is built (spec/mipet.md 7.17, a FIX), so the same
seed gives the same losses; a checkpoint holds every random-number state, so a resumed run goes on
exactly as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import json
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
from models.errors import ConfigError, NonFiniteLossError
from tune.config.run import RunConfig

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], "Path | None"], None]
STATE_FILE = "state.pt"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
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
                raise ConfigError("train.device=cuda but the trial was given no GPU (resources gpu=0)")
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
    """The model config with the dataset's size (the N of the beta-TC estimator) filled in, after
    checking that the model's input channels fit the data."""
    channels = int(data.observation_shape[-1])
    if cfg.model.image_channels != channels:
        raise ConfigError(
            f"model.image_channels={cfg.model.image_channels} but dataset {cfg.data.name!r} has "
            f"{channels} channel(s); leave model.image_channels out to take the dataset's"
        )
    return dataclasses.replace(cfg.model, dataset_size=len(data))


def load_data(cfg: RunConfig) -> Any:
    from tune.data import load_dataset

    return load_dataset(cfg.data.name, source=cfg.data.source, cache_dir=cfg.data.cache_dir)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, cfg: RunConfig, model, optimizer, scheduler, loader, step: int,
                    history: dict[str, Any], meta: dict[str, Any] | None = None) -> Path:
    """Write a complete checkpoint into `folder` (atomically: temp dir, then rename), with the
    caller's `meta` (JSON) beside the state."""
    from tune.train.checkpoint import save_state, write_checkpoint

    state = {
        "format": 1,
        "config": cfg.to_dict(),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "adversaries": model.adversary_state_dict(),  # e.g. the Factor-VAE discriminator's Adam
        "scheduler": scheduler.state_dict(),
        "loader": loader.state_dict(),
        "rng": _rng_state(),
        "history": history,
    }

    def write(tmp: Path) -> None:
        save_state(tmp, state, filename=STATE_FILE)
        (tmp / CONFIG_FILE).write_text(cfg.to_yaml())
        if meta is not None:
            (tmp / META_FILE).write_text(json.dumps(meta))

    return write_checkpoint(folder.parent, folder.name, write, step=step)


def load_checkpoint(folder: Path, cfg: RunConfig) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, refusing one of another configuration."""
    from tune.train.checkpoint import load_state

    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{folder}: not a mipet-tune checkpoint (no {STATE_FILE})")
    state = load_state(Path(folder), filename=STATE_FILE)
    saved = RunConfig.from_dict(state["config"])
    if saved.config_id() != cfg.config_id() or saved.seed != cfg.seed:
        raise ConfigError(
            f"{folder}: checkpoint of another configuration (config {saved.config_id()} seed "
            f"{saved.seed}, expected {cfg.config_id()} seed {cfg.seed})"
        )
    return state


class Encoder:
    """The model's encoder as a numpy function for the metrics: images (N, H, W, C) uint8 or
    float32 in [0, 1] -> mu (N, d), or (mu, logvar) with `with_logvar`, in large batches on the
    run's device."""

    def __init__(self, model: torch.nn.Module, device: torch.device, *, batch_size: int = 1024,
                 with_logvar: bool = False) -> None:
        self.model, self.device, self.batch_size, self.with_logvar = model, device, batch_size, with_logvar
        self.calls = 0
        self.images = 0

    @torch.no_grad()
    def __call__(self, images: np.ndarray):
        was_training = self.model.training
        self.model.eval()
        mus, logvars = [], []
        try:
            for start in range(0, len(images), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size]))
                x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
                x = x.float() / 255.0 if chunk.dtype == torch.uint8 else x.float()
                mu, logvar = self.model.encode(x)
                mus.append(mu.float().cpu().numpy())
                logvars.append(logvar.float().cpu().numpy())
        finally:
            self.model.train(was_training)
        self.calls += 1
        self.images += len(images)
        mu = np.concatenate(mus) if mus else np.zeros((0, 0), np.float32)
        if self.with_logvar:
            return mu, np.concatenate(logvars) if logvars else mu
        return mu


def evaluate_model(model, data, cfg: RunConfig, device: torch.device, *, protocol: str,
                   metrics: tuple[str, ...] | None, seed: int) -> dict[str, float]:
    """Disentanglement metrics of the model's representation (`analysis.metrics`).

    On the encoder mean by default; on a sampled z (the paper code's choice) with
    `eval.representation: sample` or the `mipet` protocol. With `eval.cache` every distinct image
    is encoded once per evaluation. A NaN code (a diverged model) raises NonFiniteLossError.
    """
    from analysis.errors import AnalysisError
    from analysis.metrics import evaluate, evaluate_encoder

    sample = cfg.eval.representation == "sample" or protocol == "mipet"
    encoder = Encoder(model, device, with_logvar=sample)
    names = list(metrics) if metrics else None
    try:
        if cfg.eval.cache:
            return evaluate_encoder(data, encoder, metrics=names, seed=seed, protocol=protocol,
                                    sample=sample)
        noise = np.random.default_rng([seed, 1])

        def represent(observations: np.ndarray) -> np.ndarray:
            if not sample:
                return encoder(observations)
            mu, logvar = encoder(observations)
            return mu + np.exp(0.5 * logvar) * noise.standard_normal(mu.shape)

        return evaluate(data, represent, metrics=names, seed=seed, protocol=protocol)
    except AnalysisError as exc:
        if "nan" in str(exc).lower() or "inf" in str(exc).lower():
            raise NonFiniteLossError(f"the model's codes are not finite: {exc}") from exc
        raise


def _finite_only(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """Metrics as reported: a metric that is NaN for this model (for example a Gaussian score
    with a constant latent) is left out and logged, never reported as a number."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        log.warning("metrics %s are not finite for this model; left out of the report", bad)
    return {f"{prefix}/{k}": v for k, v in values.items() if math.isfinite(v)}


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
    Returns:
        The final losses (means over the last report interval), metrics and timings.
    Raises:
        NonFiniteLossError: a loss or metric became NaN or infinite (never reported as a number).
        ConfigError: the configuration does not fit the data or the checkpoint.
    """
    import tempfile

    report = report or (lambda metrics, checkpoint: None)
    t0 = time.perf_counter()
    init_seed, data_seed, metric_seed = seed_streams(cfg.seed)
    device = pick_device(cfg.train.device, gpu_ids)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    data = data if data is not None else load_data(cfg)
    mcfg = model_config_for(cfg, data)

    torch.manual_seed(init_seed)
    model = build_model(mcfg).to(device)
    optimizer = build_optimizer(cfg, model)
    adversaries = model.build_adversaries()  # their own optimizers; empty for most models
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    loader = data.loader(cfg.train.batch_size, seed=data_seed, device=str(device))
    step = 0
    history: dict[str, Any] = {"fast": {}}
    if resume_from is not None:
        state = load_checkpoint(Path(resume_from), cfg)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        adversaries.load_state_dict(state.get("adversaries", {}))
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        _set_rng_state(state["rng"])
        step = int(state["step"])
        history = state.get("history", history)
        log.info("resumed at step %d from %s", step, resume_from)

    own_tmp = None
    if checkpoint_root is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="mipet-ckpt-")
        checkpoint_root = Path(own_tmp.name)
    checkpoint_root = Path(checkpoint_root)
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    writer = _summary_writer(artifact_dir)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg.train.precision == "bf16" else nullcontext()
    )
    t = cfg.train
    sums: dict[str, torch.Tensor] = {}
    count = 0
    last_losses: dict[str, float] = {}
    last_ckpt: Path | None = None
    start_step = step
    final_report: dict[str, Any] = {"step": step}
    window_start, window_images = time.perf_counter(), 0
    train_seconds = 0.0
    setup_seconds = time.perf_counter() - t0  # data, model, optimizer, checkpoint restore
    model.train()
    try:
        while step < t.steps:
            x = next(loader)
            with autocast:
                out = model(x, step=step)
            loss = out.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
            optimizer.step()
            out.terms.update(adversaries.step(out))  # after the main step, on its detached z
            scheduler.step()
            step += 1
            count += 1
            window_images += x.shape[0]
            for name, value in out.terms.items():
                v = value.detach().float()
                sums[name] = sums[name] + v if name in sums else v
            if "loss" not in out.terms:
                v = loss.detach().float()
                sums["loss"] = sums["loss"] + v if "loss" in sums else v

            due_report = step % t.report_every == 0 or step == t.steps
            due_ckpt = step % t.checkpoint_every == 0 or step == t.steps
            due_eval = bool(t.eval_every) and step % t.eval_every == 0 and step < t.steps
            if not (due_report or due_ckpt or due_eval):
                continue
            losses = {k: float(v) / count for k, v in sums.items()}
            _check_finite(step, losses)
            elapsed = time.perf_counter() - window_start
            train_seconds += elapsed
            metrics: dict[str, Any] = {"step": step, "lr": scheduler.get_last_lr()[0],
                                       "images_per_s": window_images / max(elapsed, 1e-9),
                                       "train_seconds": train_seconds,
                                       "setup_seconds": setup_seconds}
            metrics.update({f"train/{k}": v for k, v in losses.items()})
            last_losses = losses
            sums, count = {}, 0
            if due_eval:
                fast = evaluate_model(model, data, cfg, device, protocol="fast",
                                      metrics=cfg.eval.fast_metrics, seed=metric_seed)
                metrics.update(_finite_only("fast", fast))
                history["fast"][step] = fast
            if writer is not None:
                for k, v in metrics.items():
                    if k != "step":
                        writer.add_scalar(k, v, step)
            ckpt = None
            if due_ckpt and step < t.steps:
                ckpt = save_checkpoint(checkpoint_root / f"checkpoint_{step:08d}", cfg, model,
                                       optimizer, scheduler, loader, step, history,
                                       checkpoint_meta(step, None) if checkpoint_meta else None)
                last_ckpt = ckpt
            if step < t.steps:
                report(metrics, ckpt)
            else:
                final_report = metrics
            window_start, window_images = time.perf_counter(), 0

        # ---- the end: metrics, images, the final checkpoint, one last report -------------
        final: dict[str, Any] = dict(final_report)
        eval_metrics: dict[str, float] = {}
        if cfg.eval.protocol != "none":
            eval_metrics = evaluate_model(model, data, cfg, device, protocol=cfg.eval.protocol,
                                          metrics=cfg.eval.metrics or None, seed=metric_seed)
            final.update(_finite_only("eval", eval_metrics))
        if artifact_dir is not None and t.images:
            from tune.train.images import write_images

            write_images(model, data, Path(artifact_dir), device=device, seed=metric_seed)
        if writer is not None:
            for k, v in _finite_only("eval", eval_metrics).items():
                writer.add_scalar(k, v, step)
            writer.flush()
        last_ckpt = save_checkpoint(checkpoint_root / f"checkpoint_{step:08d}", cfg, model,
                                    optimizer, scheduler, loader, step, history,
                                    checkpoint_meta(step, final) if checkpoint_meta else None)
        report(final, last_ckpt)
    finally:
        if writer is not None:
            writer.close()
    seconds = time.perf_counter() - t0
    total_images = (step - start_step) * t.batch_size
    result = TrainResult(
        step=step,
        losses=last_losses,
        metrics=eval_metrics,
        seconds=seconds,
        images_per_s=total_images / max(train_seconds, 1e-9),
        checkpoint=last_ckpt if own_tmp is None else None,
        artifact_dir=Path(artifact_dir) if artifact_dir is not None else None,
        train_seconds=train_seconds,
        setup_seconds=setup_seconds,
    )
    if own_tmp is not None:
        own_tmp.cleanup()
    return result


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
