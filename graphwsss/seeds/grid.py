"""Seeds on the node grid: a pixel seed map sampled at the stride-``s`` cell centres."""

from __future__ import annotations

import numpy as np


def grid_seeds(seeds: np.ndarray, grid_size: tuple[int, int], stride: int) -> np.ndarray:
    """Pixel seeds ``[H, W]`` to node seeds ``[h, w]``: the seed at each cell's centre (nearest,
    docs/method.md §4), the centre clamped into the image for cells of the padded border."""
    if seeds.ndim != 2:
        # Imported here: it loads torch, which this numpy module otherwise does not need.
        from graphwsss.utils.shapes import describe

        raise ValueError(f"seeds must be a [H, W] array, got {describe(seeds)}")
    height, width = seeds.shape
    rows = np.minimum(np.arange(grid_size[0]) * stride + stride // 2, height - 1)
    cols = np.minimum(np.arange(grid_size[1]) * stride + stride // 2, width - 1)
    return seeds[np.ix_(rows, cols)]
