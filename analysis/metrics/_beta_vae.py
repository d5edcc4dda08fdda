"""BetaVAE score (Higgins et al. 2017), as disentanglement_lib's ``compute_beta_vae_sklearn``."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from analysis.errors import AnalysisError
from analysis.metrics._utils import (
    CodeCollector,
    GroundTruthData,
    Represent,
    check_positive,
    check_random_state,
)


def _features(
    data: GroundTruthData,
    represent: Represent,
    batch_size: int,
    num_points: int,
    random_state: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray]:
    """dlib's ``_generate_training_batch``: ``num_points`` (feature, label) pairs.

    Per point, in dlib's order: k = randint(F); factors1, factors2 = two ``sample_factors``
    calls; factors2[:, k] = factors1[:, k]; observations of batch 1, then of batch 2. The
    feature is the mean over the pairs of |z1 - z2|.
    """
    labels = np.empty(num_points, dtype=np.int64)
    collector = CodeCollector(represent, "beta_vae")
    for i in range(num_points):
        k = random_state.randint(data.num_factors)
        factors1 = data.sample_factors(batch_size, random_state)
        factors2 = data.sample_factors(batch_size, random_state)
        factors2[:, k] = factors1[:, k]
        collector.add(data.sample_observations_from_factors(factors1, random_state))
        collector.add(data.sample_observations_from_factors(factors2, random_state))
        labels[i] = k
    codes = collector.codes()
    codes = codes.reshape(num_points, 2, batch_size, codes.shape[1])  # (P, 2, B, D)
    features = np.mean(np.abs(codes[:, 0] - codes[:, 1]), axis=1)  # (P, D)
    return features, labels


def beta_vae(
    data: GroundTruthData,
    represent: Represent,
    random_state: np.random.RandomState,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
) -> dict[str, float]:
    """BetaVAE score: accuracy of a linear classifier that names the fixed factor.

    Defaults are dlib's ``unsupervised_study_v1`` budgets. The classifier is scikit-learn's
    current ``LogisticRegression`` (lbfgs, multinomial) built with ``random_state``, fit on the
    raw (unstandardised) features, as dlib does with scikit-learn >= 0.22.

    Args:
        data: ground-truth data (dlib interface).
        represent: observations (N, H, W, C) float32 -> codes (N, num_codes).
        random_state: draws everything, in dlib's order.
        batch_size: pairs averaged per training point.
        num_train: training points.
        num_eval: held-out points.
    Returns:
        ``beta_vae_train`` and ``beta_vae`` (eval accuracy), in [0, 1]; chance is
        1 / num_factors; higher is better.
    Raises:
        AnalysisError: bad budgets, non-finite codes.
    """
    check_random_state(random_state, "beta_vae")
    check_positive("beta_vae", batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    train_x, train_y = _features(data, represent, batch_size, num_train, random_state)
    if np.unique(train_y).size < 2:
        raise AnalysisError(
            "beta_vae: the training points name a single factor; raise num_train or use data "
            "with at least two factors."
        )
    model = LogisticRegression(random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    train_acc = model.score(train_x, train_y)
    eval_x, eval_y = _features(data, represent, batch_size, num_eval, random_state)
    eval_acc = model.score(eval_x, eval_y)
    return {"beta_vae_train": float(train_acc), "beta_vae": float(eval_acc)}
