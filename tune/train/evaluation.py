"""A run's disentanglement evaluation: the model's encoder as a numpy function, scored by
`analysis.metrics` (during training with the `fast` protocol, at the end with `eval.protocol`).

A diverged model is caught here, on the codes it produces: an encoder that returns a NaN or
infinite mean or log-variance (or a log-variance whose sampling scale overflows) raises
`NonFiniteLossError` before any metric sees the codes. Every other error of the metrics (an
`AnalysisError`, for example one about DCI's informativeness) passes through unchanged.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import numpy as np
import torch

from models.errors import NonFiniteLossError
from tune.config.run import RunConfig
from tune.train.conditional import FreeFactors, condition_columns, labels_at

log = logging.getLogger(__name__)

__all__ = ["Encoder", "evaluate_model", "finite_only"]


def _check_codes(mu: np.ndarray, logvar: np.ndarray | None) -> None:
    """Refuse codes a diverged model produced: NaN or infinite values of mu (N, d) or logvar
    (N, d), or a logvar whose scale `exp(logvar / 2)` is infinite in its dtype."""
    bad = int(np.count_nonzero(~np.isfinite(mu)))
    what = "mean"
    if logvar is not None and not bad:
        with np.errstate(over="ignore", invalid="ignore"):
            bad = int(np.count_nonzero(~np.isfinite(np.exp(0.5 * logvar))))
        what = "log-variance"
    if bad:
        raise NonFiniteLossError(
            f"the model's codes are not finite: {bad} of {mu.size} values of the encoder's "
            f"{what} are NaN or infinite (a diverged model cannot be scored)"
        )


class Encoder:
    """The model's encoder as a numpy function for the metrics: images (N, H, W, C) uint8 or
    float32 in [0, 1] -> mu (N, d) float32, or (mu, logvar) with `with_logvar`, in large
    batches on the run's device. Non-finite codes raise `NonFiniteLossError`.

    `precision="bf16"` runs the encoder under bfloat16 autocast (on the CPU too); the codes are
    cast back to float32 before anything sees them. The pass runs in `torch.inference_mode`,
    converts uint8 to float on the device, and copies each batch once (host to device).

    `batch_size` None: 4096 images per forward pass on a GPU; on the CPU 256 per torch thread
    (the paper encoder's cheapest batch on one thread: 0.105 ms of CPU per image against
    0.14 ms at 512 to 4096, measured with `benchmarks/metrics.py --model`)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, *,
                 batch_size: int | None = None, with_logvar: bool = False,
                 precision: str = "fp32") -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        if batch_size is None:
            batch_size = (4096 if device.type == "cuda"
                          else min(4096, 256 * max(1, torch.get_num_threads())))
        self.model, self.device, self.batch_size, self.with_logvar = (
            model, device, batch_size, with_logvar
        )
        self.precision = precision
        self.calls = 0
        self.images = 0

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def __call__(self, images: np.ndarray, labels: np.ndarray | None = None):
        was_training = self.model.training
        self.model.eval()
        n = len(images)
        mu_out = logvar_out = None
        try:
            with torch.inference_mode(), self._autocast():
                for start in range(0, n, self.batch_size):
                    chunk = torch.from_numpy(
                        np.ascontiguousarray(images[start:start + self.batch_size])
                    )
                    x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
                    x = x.float().div_(255.0) if chunk.dtype == torch.uint8 else x.float()
                    if labels is None:
                        mu, logvar = self.model.encode(x)
                    else:  # a conditional model's encoder is given the true classes
                        y = torch.from_numpy(labels[start:start + self.batch_size])
                        mu, logvar = self.model.encode(x, y.to(self.device))
                    if mu_out is None:  # one float32 array each, filled batch by batch
                        mu_out = np.empty((n, mu.shape[1]), np.float32)
                        logvar_out = np.empty((n, logvar.shape[1]), np.float32)
                    stop = start + len(chunk)
                    mu_out[start:stop] = mu.float().cpu().numpy()
                    logvar_out[start:stop] = logvar.float().cpu().numpy()
        finally:
            self.model.train(was_training)
        self.calls += 1
        self.images += n
        mu = mu_out if mu_out is not None else np.zeros((0, 0), np.float32)
        logvar = logvar_out if logvar_out is not None else mu
        _check_codes(mu, logvar if self.with_logvar else None)
        if self.with_logvar:
            return mu, logvar
        return mu


def evaluate_model(model, data, cfg: RunConfig, device: torch.device, *, protocol: str,
                   metrics: tuple[str, ...] | None, seed: int) -> dict[str, float]:
    """Disentanglement metrics of the model's representation (`analysis.metrics`).

    On the encoder mean by default; on a sampled z (the paper code's choice) with
    `eval.representation: sample` or the `mipet` protocol. With `eval.cache` every distinct image
    is encoded once per evaluation; `eval.precision: bf16` encodes under bfloat16 autocast.
    Non-finite codes (a diverged model) raise NonFiniteLossError; the metrics' own errors pass
    through.
    """
    from analysis.metrics import GROUP_METRIC_KEYS, evaluate, evaluate_encoder

    sample = cfg.eval.representation == "sample" or protocol == "mipet"
    encoder = Encoder(model, device, with_logvar=sample, precision=cfg.eval.precision)
    # Group metrics (UDR) score a trial's seeds together: tune.sweep.udr, after the last seed.
    names = [n for n in metrics if n not in GROUP_METRIC_KEYS] if metrics else None
    columns = condition_columns(model.cfg, data) if getattr(model, "needs_labels", False) else None
    if columns is not None:
        # Only the factors the model is not given are scored; its encoder gets each row's
        # true classes of the others (no cache: those classes are drawn by the metrics).
        full, data = data, FreeFactors(data, columns)
        given = encoder

        def encoder(rows: np.ndarray):  # type: ignore[no-redef]
            rows = np.asarray(rows).reshape(-1)
            return given(full.images_at(rows), labels_at(full, columns, rows))

    has_factors = bool(getattr(data, "factor_names", True))  # the cache keys on factors
    if cfg.eval.cache and columns is None and has_factors:
        return evaluate_encoder(data, encoder, metrics=names, seed=seed, protocol=protocol,
                                sample=sample)
    noise = np.random.default_rng([seed, 1])

    def represent(observations: np.ndarray) -> np.ndarray:
        if not sample:
            return encoder(observations)
        mu, logvar = encoder(observations)
        return mu + np.exp(0.5 * logvar) * noise.standard_normal(mu.shape)

    return evaluate(data, represent, metrics=names, seed=seed, protocol=protocol)


def finite_only(prefix: str, values: dict[str, float]) -> dict[str, float]:
    """Metrics as reported: a metric that is NaN for this model (for example a Gaussian score
    with a constant latent) is left out and logged, never reported as a number."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        log.warning("metrics %s are not finite for this model; left out of the report", bad)
    return {f"{prefix}/{k}": v for k, v in values.items() if math.isfinite(v)}
