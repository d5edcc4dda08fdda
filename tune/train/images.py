"""Reconstructions and latent traversals of a model, as PNG grids and animated GIFs (Pillow).

`write_images(model, data, folder, ...)` writes into `folder`:
    reconstruction.png      top row the inputs, bottom row their reconstructions
    traversal_<name>.png    one per image: a row per latent, its code swept over the range
    traversal.png           the first reference image's grid (what the sweep report stacks)
    traversal.gif           one frame per traversal value: a row per image, a column per latent
and returns the pictures as arrays for TensorBoard. The images are fixed reference images of the
dataset (dSprites: one square, one ellipse, one heart, as disentanglement-pytorch shows; other
datasets: the first values of their shape-like factor, every other factor at its middle; data
without factors: three images at fixed positions) and
random ones drawn with the run's metrics seed (the same images at every evaluation).

A latent is swept over [-2, 2] (`range="fixed"`) or over the range of its encoder means on a
sample of the data (`range="data"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPAN = 2.0
N_RANDOM = 3
N_DATA_RANGE = 512  # images whose codes give the "data" range of each latent
GIF_MS = 200  # per frame
_DSPRITES_SHAPES = ("square", "ellipse", "heart")


@dataclass
class Pictures:
    """What `write_images` made: name -> float image (H, W, 3) in [0, 1], and the files."""

    images: dict[str, np.ndarray] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


def grid(tiles: np.ndarray, rows: int, cols: int, pad: int = 2) -> np.ndarray:
    """tiles (rows*cols, H, W, C) float in [0, 1] -> one image (rows*(H+pad)+pad, ..., 3)."""
    n, h, w, c = tiles.shape
    out = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
    for i in range(min(n, rows * cols)):
        r, q = divmod(i, cols)
        tile = tiles[i] if c == 3 else np.repeat(tiles[i], 3, axis=-1)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y:y + h, x:x + w] = tile
    return np.clip(out, 0.0, 1.0)


def reference_images(
    data: Any, seed: int, n_random: int = N_RANDOM
) -> tuple[list[str], np.ndarray]:
    """The names and indices of the fixed reference images, then `n_random` random ones.

    Data without factors (your own images) has no shape to pick by: its references are three
    images at fixed positions (the first, a third and two thirds in), `image<index>`."""
    rng = np.random.RandomState(seed % (2**32))
    if not data.factor_names:
        refs = sorted({len(data) * k // 3 for k in range(3)})
        pool = np.setdiff1d(np.arange(len(data)), refs)
        random = [int(i) for i in rng.choice(pool, size=min(n_random, len(pool)), replace=False)]
        return ([f"image{i}" for i in refs] + [f"random{i}" for i in range(len(random))],
                np.asarray(refs + random))
    names_f = [n.lower() for n in data.factor_names]
    sizes = data.factors_num_values
    shape_like = next((i for i, n in enumerate(names_f) if "shape" in n or "type" in n), 0)
    count = min(3, sizes[shape_like])
    factors = np.tile(np.asarray([s // 2 for s in sizes], np.int64), (count, 1))
    factors[:, shape_like] = np.arange(count)
    if data.name == "dsprites":
        factors[:, names_f.index("orientation")] = 0
        names = list(_DSPRITES_SHAPES[:count])
    else:
        names = [f"{data.factor_names[shape_like]}{v}" for v in range(count)]
    refs = [int(i) for i in data.index_of(factors)]
    random = [int(i) for i in rng.choice(len(data), size=n_random, replace=False)]
    return names + [f"random{i}" for i in range(n_random)], np.asarray(refs + random)


def traversal_values(model: torch.nn.Module, data: Any, mu: torch.Tensor, steps: int, *,
                     range_: str, seed: int) -> torch.Tensor:
    """(steps, d) values each latent takes: [-2, 2], or its min..max code on a data sample."""
    d = mu.shape[1]
    if range_ == "fixed":
        lo, hi = torch.full((d,), -SPAN), torch.full((d,), SPAN)
    else:
        rng = np.random.RandomState((seed + 1) % (2**32))
        idx = np.sort(rng.choice(len(data), size=min(N_DATA_RANGE, len(data)), replace=False))
        codes, _ = model.encode(_batch(data, idx, mu.device), _labels(model, data, idx, mu.device))
        lo, hi = codes.min(0).values.cpu(), codes.max(0).values.cpu()
    t = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    return (lo + (hi - lo) * t).to(mu.device)


def _batch(data: Any, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(data.observations_at(idx), np.float32))
    return x.permute(0, 3, 1, 2).to(device)


def _labels(model: torch.nn.Module, data: Any, idx: np.ndarray,
            device: torch.device) -> torch.Tensor | None:
    """The true classes of a conditional model's `condition_on` factors of rows `idx`."""
    if not getattr(model, "needs_labels", False):
        return None
    from tune.train.conditional import condition_columns, labels_at

    return torch.from_numpy(labels_at(data, condition_columns(model.cfg, data), idx)).to(device)


def _traverse(model: torch.nn.Module, mu: torch.Tensor, values: torch.Tensor,
              labels: torch.Tensor | None = None) -> np.ndarray:
    """Decoded traversals (n images, rows, steps, H, W, C) of the codes `mu` (n, d): one row per
    latent; a conditional model (given each image's classes `labels` (n, F_c)) has one more row
    per conditioned factor, moving its class from the first to the last at fixed z."""
    n, d = mu.shape
    steps = values.shape[0]
    codes = mu[:, None, None, :].repeat(1, d, steps, 1)  # (n, d, steps, d)
    for j in range(d):
        codes[:, j, :, j] = values[:, j]
    rows = d
    if labels is not None:
        sizes = model.condition_sizes
        cond = labels[:, None, None, :].repeat(1, d + len(sizes), steps, 1)  # (n, rows, steps, F)
        for f, size in enumerate(sizes):
            moved = torch.linspace(0, size - 1, steps, device=labels.device).round().long()
            cond[:, d + f, :, f] = moved
        codes = torch.cat([codes, mu[:, None, None, :].repeat(1, len(sizes), steps, 1)], dim=1)
        rows = d + len(sizes)
        labels = cond.reshape(-1, len(sizes))
    out = model.decode(codes.reshape(-1, d), *([] if labels is None else [labels]))
    out = out.float().clamp(0, 1).permute(0, 2, 3, 1)
    return out.cpu().numpy().reshape(n, rows, steps, *out.shape[1:])


def save_png(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_uint8(image)).save(path)
    return path


def save_gif(path: Path, frames: list[np.ndarray], ms: int = GIF_MS) -> Path:
    """An animated GIF, one frame per array, looping. Each frame carries a progress strip at
    the bottom (also keeping equal frames apart: GIF writers merge identical frames)."""
    from PIL import Image

    images = []
    for i, frame in enumerate(frames):
        frame = np.concatenate([frame, np.ones((4, *frame.shape[1:]), np.float32)], axis=0)
        width = round((frame.shape[1] - 1) * i / max(1, len(frames) - 1)) + 1
        frame[-3:-1, :width] = (0.2, 0.4, 0.9)
        images.append(Image.fromarray(_uint8(frame)))
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms, loop=0,
                   optimize=False, disposal=1)
    return path


def _uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@torch.no_grad()
def write_images(model: torch.nn.Module, data: Any, folder: Path, *, device: torch.device,
                 seed: int, steps: int = 9, range_: str = "fixed") -> Pictures:
    """Write the reconstructions, traversal grids and the traversal GIF into `folder` (see the
    module docstring). `steps` values per latent; `range_` "fixed" or "data"."""
    was_training = model.training
    model.eval()
    try:
        names, idx = reference_images(data, seed)
        x = _batch(data, idx, device)
        labels = _labels(model, data, idx, device)
        extra = [] if labels is None else [labels]
        mu, _ = model.encode(x, *extra)
        recon = model.decode(mu, *extra).float().clamp(0, 1)
        pair = torch.cat([x, recon]).permute(0, 2, 3, 1).cpu().numpy()
        pics = Pictures()
        folder = Path(folder)
        pics.images["reconstruction"] = grid(pair, 2, len(names))
        values = traversal_values(model, data, mu, steps, range_=range_, seed=seed)
        tiles = _traverse(model, mu, values, labels)  # (n, rows, steps, H, W, C)
        n, d = tiles.shape[:2]
        for i, name in enumerate(names):
            pics.images[f"traversal_{name}"] = grid(tiles[i].reshape(-1, *tiles.shape[3:]), d,
                                                    steps)
        pics.images["traversal"] = pics.images[f"traversal_{names[0]}"]
        for name, image in pics.images.items():
            pics.paths[name] = save_png(folder / f"{name}.png", image)
        frames = [grid(tiles[:, :, t].reshape(-1, *tiles.shape[3:]), n, d) for t in range(steps)]
        pics.paths["traversal_gif"] = save_gif(folder / "traversal.gif", frames)
        return pics
    finally:
        model.train(was_training)
