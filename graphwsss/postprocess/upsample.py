r"""Node probabilities to image size (docs/method.md §7).

The prediction grid has one node per ``stride × stride`` cell of the image padded at the bottom
and right to a multiple of the stride: an ``H × W`` image gives an ``h × w`` grid with
``h = ⌈H / s⌉``, ``w = ⌈W / s⌉``, and node ``(i, j)`` covers the pixels
``[s i, s i + s) × [s j, s j + s)`` of the padded image. Upsampling therefore goes to the padded
size ``(h s, w s)`` by bilinear interpolation with ``align_corners=False`` (each node's value
sits at the centre of its cell, pixel coordinate ``s i + (s − 1)/2``) and then keeps the top-left
``H × W``, the image itself, dropping the padding. Interpolation weights sum to 1, so
probabilities stay normalised. A node's weight at a pixel of its own cell is at least
``1/2 + 1/(2s)`` per axis, so a one-hot node prediction wins the argmax over its whole cell where
labels vary along one axis only, and over (at least) the central half of its cell in general
(the own weight there is at least ``(1 − 1.5/s)²`` > 1/2 for ``s = 8``).

A grid padded further (images of different sizes batched together) is first cut to its valid
``grid_size``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def upsample_probs(probs: Tensor, image_size: tuple[int, int], stride: int = 8,
                   grid_size: tuple[int, int] | None = None) -> Tensor:
    r"""Bilinear upsampling of node probabilities to the image, padding cropped.

    Args:
        probs: ``[K, h', w']`` or ``[B, K, h', w']`` float node probabilities.
        image_size: ``(H, W)`` of the image (every image of a batch).
        stride: image pixels per grid cell ``s``.
        grid_size: ``(h, w)`` of the grid that covers this image, ``h = ⌈H / s⌉``,
            ``w = ⌈W / s⌉``; default the grid of ``probs``. Cells beyond it (``h' > h``,
            batch padding) are dropped.

    Returns:
        ``[K, H, W]`` or ``[B, K, H, W]``, same dtype and device as ``probs``.
    """
    if probs.ndim not in (3, 4) or not probs.is_floating_point():
        raise ValueError(f"probs must be a float [K, h, w] or [B, K, h, w] tensor, got "
                         f"{probs.dtype} shape {tuple(probs.shape)}")
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0 or stride <= 0:
        raise ValueError(f"image_size {image_size} and stride {stride} must be positive")
    expected = (math.ceil(height / stride), math.ceil(width / stride))
    grid_h, grid_w = (int(v) for v in (grid_size or probs.shape[-2:]))
    if (grid_h, grid_w) != expected:
        raise ValueError(f"a {height}x{width} image at stride {stride} has a {expected[0]}x"
                         f"{expected[1]} grid (ceil), got grid {grid_h}x{grid_w}"
                         + ("" if grid_size else "; pass grid_size for a batch-padded grid"))
    if grid_h > probs.shape[-2] or grid_w > probs.shape[-1]:
        raise ValueError(f"grid_size {grid_size} exceeds the probs grid "
                         f"{tuple(probs.shape[-2:])}")
    batched = probs if probs.ndim == 4 else probs.unsqueeze(0)
    batched = batched[..., :grid_h, :grid_w]
    padded = F.interpolate(batched, size=(grid_h * stride, grid_w * stride), mode="bilinear",
                           align_corners=False)
    full = padded[..., :height, :width]
    return full if probs.ndim == 4 else full.squeeze(0)
