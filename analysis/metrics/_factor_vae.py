"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``compute_factor_vae``."""

from __future__ import annotations

import logging

import numpy as np

from analysis.errors import AnalysisError
from analysis.metrics._utils import (
    CodeCollector,
    GroundTruthData,
    Represent,
    check_codes,
    check_positive,
    check_random_state,
)

log = logging.getLogger(__name__)


def _votes(
    data: GroundTruthData,
    represent: Represent,
    batch_size: int,
    num_points: int,
    random_state: np.random.RandomState,
    global_var: np.ndarray,
    active: np.ndarray,
) -> np.ndarray:
    """dlib's ``_generate_training_batch``: a (num_factors, num_codes) vote matrix.

    Per vote, in dlib's order: k = randint(F); ``sample_factors(batch_size)``; every row's
    factor k set to row 0's; observations. The vote goes to the active latent with the smallest
    variance relative to its global variance (column = position in the active subset, as dlib).
    """
    ks = np.empty(num_points, dtype=np.int64)
    collector = CodeCollector(represent, "factor_vae")
    for i in range(num_points):
        k = random_state.randint(data.num_factors)
        factors = data.sample_factors(batch_size, random_state)
        factors[:, k] = factors[0, k]
        collector.add(data.sample_observations_from_factors(factors, random_state))
        ks[i] = k
    codes = collector.codes()
    codes = codes.reshape(num_points, batch_size, codes.shape[1])  # (P, B, D)
    local_var = np.var(codes, axis=1, ddof=1)  # (P, D)
    ratio = local_var[:, active] / global_var[active]
    argmin = np.argmin(ratio, axis=1)
    votes = np.zeros((data.num_factors, global_var.shape[0]), dtype=np.int64)
    np.add.at(votes, (ks, argmin), 1)
    return votes


def factor_vae(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict[str, float]:
    """FactorVAE score: majority-vote accuracy of "which factor was fixed".

    Defaults are dlib's study budgets, including the study's ``prune_dims.threshold = 0.05`` on
    the latents' global standard deviation (not scale-invariant: a latent with std < 0.05 is
    ignored). Latents with zero global variance are always ignored (with threshold 0, dlib
    would divide 0 by 0). If no latent is active both scores are 0, as in dlib.

    ``num_eval=0`` means no held-out votes (the paper code's protocol): ``factor_vae`` then
    reports the training accuracy.

    Args:
        data: ground-truth data (dlib interface).
        represent: observations -> codes (N, num_codes).
        random_state: draws everything, in dlib's order.
        batch_size: observations per vote.
        num_train: training votes.
        num_eval: held-out votes (0: none).
        num_variance_estimate: observations for the global variances (one
            ``sample_observations`` call, as dlib).
        prune_threshold: minimum global standard deviation of an active latent.
    Returns:
        ``factor_vae_train`` and ``factor_vae`` in [0, 1]; higher is better.
    """
    check_random_state(random_state, "factor_vae")
    check_positive(
        "factor_vae",
        batch_size=batch_size,
        num_train=num_train,
        num_variance_estimate=num_variance_estimate,
    )
    if batch_size < 2 or num_variance_estimate < 2:
        raise AnalysisError("factor_vae: batch_size and num_variance_estimate must be >= 2.")
    if num_eval < 0:
        raise AnalysisError(f"factor_vae: num_eval must be >= 0, got {num_eval}.")
    observations = data.sample_observations(num_variance_estimate, random_state)
    collector = CodeCollector(represent, "factor_vae")
    collector.add(observations)
    codes = check_codes(collector.codes(), num_variance_estimate, "factor_vae")
    global_var = np.var(codes, axis=0, ddof=1)
    active = (np.sqrt(global_var) >= prune_threshold) & (global_var > 0)
    if not active.any():
        log.warning("factor_vae: no latent has std >= %s; scores are 0.", prune_threshold)
        return {"factor_vae_train": 0.0, "factor_vae": 0.0}
    train_votes = _votes(data, represent, batch_size, num_train, random_state, global_var, active)
    classifier = np.argmax(train_votes, axis=0)
    cols = np.arange(train_votes.shape[1])
    train_acc = train_votes[classifier, cols].sum() / train_votes.sum()
    if num_eval == 0:
        eval_acc = train_acc
    else:
        eval_votes = _votes(
            data, represent, batch_size, num_eval, random_state, global_var, active
        )
        eval_acc = eval_votes[classifier, cols].sum() / eval_votes.sum()
    return {"factor_vae_train": float(train_acc), "factor_vae": float(eval_acc)}
