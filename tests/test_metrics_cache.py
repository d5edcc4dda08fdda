"""CachedRepresentation: each distinct image encoded once, values unchanged, sampled codes."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import AnalysisError
from analysis.metrics import CachedRepresentation, evaluate, evaluate_encoder
from analysis.metrics.synthetic import SyntheticData, factor_representation, gaussian_encoder

SMALL = {
    "beta_vae": {"batch_size": 16, "num_train": 200, "num_eval": 100},
    "factor_vae": {"batch_size": 32, "num_train": 200, "num_eval": 100,
                   "num_variance_estimate": 500},
    "mig": {"num_train": 1000},
    "dci": {"num_train": 300, "num_test": 150, "n_estimators": 5},
    "sap": {"num_train": 500, "num_test": 250},
    "irs": {"num_train": 1000},
    "modularity_explicitness": {"num_train": 300, "num_test": 150},
    "unsupervised": {"num_train": 1000},
}


class CountingEncoder:
    """Deterministic encoder over uint8 images that records every image it encodes."""

    def __init__(self, data: SyntheticData) -> None:
        self.rep = factor_representation(data, noise_dims=2)
        self.seen: list[np.ndarray] = []
        self.calls = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8
        self.calls += 1
        self.seen.append(images.reshape(len(images), -1).copy())
        return self.rep(images)


@pytest.fixture()
def data() -> SyntheticData:
    return SyntheticData((3, 6, 10, 8))


def test_cached_evaluation_equals_direct_evaluation(data) -> None:
    encoder = CountingEncoder(data)
    direct = evaluate(data, encoder.rep, seed=4, **SMALL)
    cache = CachedRepresentation(data, encoder, batch_size=256)
    cached = evaluate(cache.data, cache.represent, seed=4, **SMALL)
    assert cached == direct  # bit-identical for a deterministic row-wise encoder


def test_threaded_evaluation_gives_the_same_values(data) -> None:
    encoder = CountingEncoder(data)
    cache = CachedRepresentation(data, encoder, batch_size=256)
    serial = evaluate(cache.data, cache.represent, seed=1, **SMALL)
    threaded = evaluate(cache.data, cache.represent, seed=1, n_jobs=3, **SMALL)
    assert threaded == serial and list(threaded) == list(serial)


def test_each_distinct_image_is_encoded_once_in_large_batches(data) -> None:
    encoder = CountingEncoder(data)
    cache = CachedRepresentation(data, encoder, batch_size=512)
    evaluate(cache.data, cache.represent, seed=0, **SMALL)
    seen = np.concatenate(encoder.seen)
    assert len(np.unique(seen, axis=0)) == len(seen)  # nothing encoded twice
    assert cache.num_encoded == len(seen) <= len(data)
    assert cache.num_lookups > 10 * cache.num_encoded  # BetaVAE/FactorVAE reuse images
    assert encoder.calls <= int(np.ceil(len(data) / 512)) + len(SMALL)  # big batches


def test_sampled_codes_draw_fresh_seeded_noise(data) -> None:
    encode = gaussian_encoder(data, logvar=-2.0)
    make = lambda seed: CachedRepresentation(  # noqa: E731
        data, encode, sample=True, rng=np.random.default_rng(seed)
    )
    a, b = make(0), make(0)
    idx = np.arange(10).reshape(-1, 1)
    first = a.represent(idx)
    assert np.array_equal(first, b.represent(idx))  # same seed, same noise
    second = a.represent(idx)
    assert not np.array_equal(first, second)  # fresh noise at each lookup
    mu = encode(data.images_at(np.arange(10)))[0]
    assert np.abs(first - mu).max() < 5 * np.exp(-1.0)  # std = exp(logvar / 2)
    assert a.num_encoded == 10  # noise is drawn at lookup; mu/logvar are cached


def test_evaluate_encoder_mipet_protocol_is_seeded(data) -> None:
    encode = gaussian_encoder(data, logvar=-8.0)
    small = {"dci": {"num_train": 500, "num_test": 250, "n_estimators": 5}}
    a = evaluate_encoder(data, encode, protocol="mipet", seed=2, **small)
    assert evaluate_encoder(data, encode, protocol="mipet", seed=2, **small) == a
    assert a["mig"] > 0.3 and a["dci_disentanglement"] > 0.5


def test_cache_rejects_misuse(data) -> None:
    with pytest.raises(AnalysisError, match="sample=True"):
        CachedRepresentation(data, gaussian_encoder(data)).represent(np.zeros((2, 1), int))
    with pytest.raises(AnalysisError, match="out of range"):
        CachedRepresentation(data, CountingEncoder(data)).represent(np.array([[len(data)]]))

    class Noisy(SyntheticData):
        def sample_observations_from_factors(self, factors, random_state):
            obs = super().sample_observations_from_factors(factors, random_state)
            return obs + random_state.rand(*obs.shape).astype(np.float32) * 0.01

    with pytest.raises(AnalysisError, match="cannot\\s+be cached|cannot be cached"):
        CachedRepresentation(Noisy((2, 2)), CountingEncoder(data))
