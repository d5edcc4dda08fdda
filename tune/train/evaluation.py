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
    float32 in [0, 1] -> mu (N, d), or (mu, logvar) with `with_logvar`, in large batches on the
    run's device. Non-finite codes raise `NonFiniteLossError`."""

    def __init__(self, model: torch.nn.Module, device: torch.device, *, batch_size: int = 1024,
                 with_logvar: bool = False) -> None:
        self.model, self.device, self.batch_size, self.with_logvar = (
            model, device, batch_size, with_logvar
        )
        self.calls = 0
        self.images = 0

    @torch.no_grad()
    def __call__(self, images: np.ndarray, labels: np.ndarray | None = None):
        was_training = self.model.training
        self.model.eval()
        mus, logvars = [], []
        try:
            for start in range(0, len(images), self.batch_size):
                chunk = torch.from_numpy(
                    np.ascontiguousarray(images[start:start + self.batch_size])
                )
                x = chunk.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
                x = x.float() / 255.0 if chunk.dtype == torch.uint8 else x.float()
                if labels is None:
                    mu, logvar = self.model.encode(x)
                else:  # a conditional model's encoder is given the true classes
                    y = torch.from_numpy(labels[start:start + self.batch_size]).to(self.device)
                    mu, logvar = self.model.encode(x, y)
                mus.append(mu.float().cpu().numpy())
                logvars.append(logvar.float().cpu().numpy())
        finally:
            self.model.train(was_training)
        self.calls += 1
        self.images += len(images)
        mu = np.concatenate(mus) if mus else np.zeros((0, 0), np.float32)
        logvar = np.concatenate(logvars) if logvars else mu
        _check_codes(mu, logvar if self.with_logvar else None)
        if self.with_logvar:
            return mu, logvar
        return mu


def evaluate_model(model, data, cfg: RunConfig, device: torch.device, *, protocol: str,
                   metrics: tuple[str, ...] | None, seed: int) -> dict[str, float]:
    """Disentanglement metrics of the model's representation (`analysis.metrics`).

    On the encoder mean by default; on a sampled z (the paper code's choice) with
    `eval.representation: sample` or the `mipet` protocol. With `eval.cache` every distinct image
    is encoded once per evaluation. Non-finite codes (a diverged model) raise
    NonFiniteLossError; the metrics' own errors pass through.
    """
    from analysis.metrics import GROUP_METRIC_KEYS, evaluate, evaluate_encoder

    sample = cfg.eval.representation == "sample" or protocol == "mipet"
    encoder = Encoder(model, device, with_logvar=sample)
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
