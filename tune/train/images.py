"""Reconstructions and latent traversals of a trained model, as PNG files (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _grid(tiles: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """tiles (rows*cols, H, W, C) float in [0, 1] -> one image (rows*(H+pad), cols*(W+pad), 3)."""
    n, h, w, c = tiles.shape
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        tile = tiles[i] if c == 3 else np.repeat(tiles[i], 3, axis=-1)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = tile
    return np.clip(out, 0.0, 1.0)


def _save(path: Path, image: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.image

    path.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(str(path), image)


@torch.no_grad()
def write_images(model: torch.nn.Module, data: Any, folder: Path, *, device: torch.device,
                 seed: int, n_images: int = 8, n_steps: int = 9, span: float = 2.5) -> dict[str, Path]:
    """Write `reconstruction.png` (top row inputs, bottom row reconstructions) and `traversal.png`
    (one row per latent: the mean code of one image with that latent swept over
    [-span, span]) into `folder`."""
    was_training = model.training
    model.eval()
    try:
        rng = np.random.RandomState(seed % (2**32))
        idx = np.sort(rng.choice(len(data), size=n_images, replace=False))
        x = torch.from_numpy(np.asarray(data.observations_at(idx), np.float32)).permute(0, 3, 1, 2)
        x = x.to(device)
        mu, _ = model.encode(x)
        recon = model.decode(mu).float().clamp(0, 1)
        pair = torch.cat([x, recon]).permute(0, 2, 3, 1).cpu().numpy()
        paths = {"reconstruction": Path(folder) / "reconstruction.png",
                 "traversal": Path(folder) / "traversal.png"}
        _save(paths["reconstruction"], _grid(pair, 2, n_images))

        d = mu.shape[1]
        base = mu[:1].repeat(d * n_steps, 1)
        values = torch.linspace(-span, span, n_steps, device=mu.device)
        for j in range(d):
            base[j * n_steps:(j + 1) * n_steps, j] = values
        frames = model.decode(base).float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        _save(paths["traversal"], _grid(frames, d, n_steps))
        return paths
    finally:
        model.train(was_training)
