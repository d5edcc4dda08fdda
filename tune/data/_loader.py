"""Training batches: a fresh seeded permutation per epoch, made float one batch at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Protocol

import numpy as np

from models.errors import ConfigError

if TYPE_CHECKING:
    import torch


class Batchable(Protocol):
    """What the loader reads of a dataset (`GroundTruthData` is one)."""

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def images_at(self, indices: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) images, 0..255."""

    def factors_of(self, indices: np.ndarray) -> np.ndarray:
        """int64 (N, F) factor classes."""


class BatchLoader:
    """Endless iterator over epochs of a dataset, in an order fixed by one seed.

    Epoch e visits the images in the permutation drawn by
    `np.random.default_rng(SeedSequence(seed).spawn(e + 1)[e])`, so the order depends only on
    (seed, epoch), and `state_dict()`/`load_state_dict()` (epoch, position) resume it exactly.
    Batches are float32 torch tensors (B, C, H, W) in [0, 1]; on a CUDA device they are built in
    pinned memory and copied with `non_blocking=True`.

    Args:
        data: the dataset.
        batch_size: images per batch (>= 1).
        seed: the run's data-order seed (an int or a SeedSequence).
        device: torch device for the batches.
        drop_last: skip the last, smaller batch of each epoch.
        labels: factor columns whose classes come with each batch (a conditional model's
            `condition_on`): batches are then (images, int64 (B, len(labels)) classes). None:
            images alone (every unconditional model).
    """

    def __init__(self, data: Batchable, batch_size: int,
                 seed: int | np.random.SeedSequence, *, device: str = "cpu",
                 drop_last: bool = False, labels: list[int] | None = None) -> None:
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > len(data):
            raise ConfigError(f"batch_size {batch_size} exceeds the {len(data)} images of "
                              f"{data.name} while drop_last is set")
        import torch

        self._torch = torch
        self.data = data
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.labels = None if labels is None else [int(c) for c in labels]
        self.device = torch.device(device)
        self._seed = seed if isinstance(seed, np.random.SeedSequence) else \
            np.random.SeedSequence(int(seed))
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()
        self.epoch = 0
        self.position = 0
        self._perm: np.ndarray | None = None

    # the permutation of an epoch depends only on (seed, epoch)
    def _permutation(self, epoch: int) -> np.ndarray:
        child = np.random.SeedSequence(self._seed.entropy,
                                       spawn_key=(*self._seed.spawn_key, epoch),
                                       pool_size=self._seed.pool_size)
        return np.random.default_rng(child).permutation(len(self.data))

    def state_dict(self) -> dict[str, Any]:
        """{'epoch', 'position'}: where the next batch starts."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._perm = None

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def next_indices(self) -> np.ndarray:
        """int64 (B,) indices of the next batch (advances the position)."""
        n = len(self.data)
        if self.position >= n or (self.drop_last and self.position + self.batch_size > n):
            self.epoch += 1
            self.position = 0
            self._perm = None
        if self._perm is None:
            self._perm = self._permutation(self.epoch)
        idx = self._perm[self.position:self.position + self.batch_size]
        self.position += len(idx)
        return idx

    def __next__(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        idx = self.next_indices()
        out = self._images(idx)
        if self.labels is None:
            return out
        classes = self._torch.from_numpy(self.data.factors_of(idx)[:, self.labels])
        return out, classes.to(out.device)

    def _images(self, idx: np.ndarray) -> torch.Tensor:
        images = self.data.images_at(idx)  # uint8 (B, H, W, C)
        torch = self._torch
        batch = torch.from_numpy(images).permute(0, 3, 1, 2)  # (B, C, H, W) view
        if self._pin:
            out = torch.empty(batch.shape, dtype=torch.float32, pin_memory=True)
            out.copy_(batch)
        else:
            out = batch.to(torch.float32, memory_format=torch.contiguous_format)
        out.div_(255.0)
        if self.device.type != "cpu":
            out = out.to(self.device, non_blocking=True)
        return out
