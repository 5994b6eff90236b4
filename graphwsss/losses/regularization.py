r"""Gated-CRF / Potts regularisation :math:`L_{reg}` of the A²GNN loss (method §6, eq. 3.22).

Over the ordered node pairs :math:`(i, j)`, :math:`i \neq j`, within radius :math:`r` on the
prediction grid (a disc by default), with the RGB-XY Gaussian kernel of docs/method.md §4

.. math::
    K_{ij} = \exp\Bigl(-\frac{\lVert p_i - p_j \rVert^2}{2\sigma_{xy}^2}
                       -\frac{\lVert I_i - I_j \rVert^2}{2\sigma_{rgb}^2}\Bigr),

the Potts energy of the soft prediction :math:`O` is

.. math::
    L_{reg} = \frac{1}{N}\Bigl(\sum_{i,j} K_{ij} - \sum_{i,j} K_{ij}\langle O_i, O_j\rangle\Bigr)
            = \frac{1}{N}\sum_{i,j} K_{ij}\bigl(1 - \langle O_i, O_j\rangle\bigr),

with :math:`N` the number of (valid) nodes. Each unordered pair appears twice, as in the
Gated-CRF loss. It is 0 for a constant one-hot prediction and penalises label changes between
nearby pixels of similar colour. Pairs touching a node outside ``valid_mask`` (padding) are left
out. Computed with one vectorised step per offset, never a dense ``N x N`` matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from graphwsss.graphs.grid import pairwise_grid, radius_offsets
from graphwsss.graphs.rgbxy import rgbxy_kernel
from graphwsss.utils.shapes import check_shape

__all__ = ["PottsKernel", "potts_kernel", "potts_regularization"]


class PottsKernel(NamedTuple):
    """The image-dependent part of :math:`L_{reg}`, reusable across training steps.

    Attributes:
        offsets: ``LongTensor[O, 2]`` of ``(dy, dx)``, one of each pair ``{o, -o}``.
        weight: ``[O, h, w]``: ``2 K_{i, i+o}`` (both orders of the pair), 0 for pairs leaving
            the grid or touching an invalid node.
        num_nodes: ``[]`` float, :math:`N` (number of valid nodes, at least 1).
    """

    offsets: Tensor
    weight: Tensor
    num_nodes: Tensor


def potts_kernel(image_grid: Tensor, radius: int = 5, sigma_xy: float = 6.0,
                 sigma_rgb: float = 0.1, valid_mask: Tensor | None = None,
                 shape: str = "disc") -> PottsKernel:
    r"""Pair weights :math:`K_{ij}` of eq. 3.22 for one image.

    Since :math:`K_{ij} = K_{ji}` and :math:`\langle O_i, O_j\rangle` is symmetric, only one
    offset of each pair :math:`\{o, -o\}` is kept, with weight doubled.

    Args:
        image_grid: ``[3, h, w]`` RGB in ``[0, 1]`` resized to the prediction grid.
        radius: pair radius :math:`r` in grid cells (default 5).
        sigma_xy: spatial bandwidth in grid cells (default 6).
        sigma_rgb: colour bandwidth (default 0.1).
        valid_mask: optional ``[h, w]`` bool, ``False`` on padded nodes.
        shape: ``"disc"`` (paper, default) or ``"square"`` (reference code) neighbourhood.

    Returns:
        :class:`PottsKernel` on ``image_grid``'s device.
    """
    check_shape("image_grid", image_grid, "[3, h, w]", shape=(3, None, None))
    height, width = image_grid.shape[1:]
    device = image_grid.device
    offsets = radius_offsets(radius, shape=shape, device=device)
    dy, dx = offsets[:, 0], offsets[:, 1]
    offsets = offsets[(dy > 0) | ((dy == 0) & (dx > 0))]          # one of {o, -o}; no self pair
    weight = 2.0 * rgbxy_kernel(image_grid[None], offsets, sigma_xy=sigma_xy,
                                sigma_rgb=sigma_rgb)[0]
    if valid_mask is None:
        num_nodes = torch.tensor(float(height * width), device=device, dtype=weight.dtype)
    else:
        check_shape("valid_mask", valid_mask, f"[h, w] = [{height}, {width}]",
                    shape=(height, width), what="mask")
        valid = valid_mask.to(device=device, dtype=weight.dtype)
        weight = weight * pairwise_grid(_product, valid[None], offsets)   # valid_i * valid_j
        num_nodes = valid.sum().clamp(min=1.0)
    return PottsKernel(offsets, weight, num_nodes)


def potts_regularization(probs: Tensor, image_grid: Tensor | None = None, radius: int = 5,
                         sigma_xy: float = 6.0, sigma_rgb: float = 0.1,
                         valid_mask: Tensor | None = None, shape: str = "disc",
                         kernel: PottsKernel | None = None) -> Tensor:
    r"""Potts regularisation :math:`L_{reg}` of one image (eq. 3.22, module docstring).

    Args:
        probs: ``[K, h, w]`` class probabilities :math:`O` (softmax over ``K``).
        image_grid: ``[3, h, w]`` RGB in ``[0, 1]`` on the grid; unused when ``kernel`` is given.
        radius, sigma_xy, sigma_rgb, valid_mask, shape: as :func:`potts_kernel` (defaults
            r = 5, :math:`\sigma_{xy}` = 6, :math:`\sigma_{rgb}` = 0.1, all nodes valid, disc).
        kernel: a precomputed :func:`potts_kernel` of this image, to skip recomputing the
            image-dependent weights at every step.

    Returns:
        A scalar tensor, differentiable in ``probs``.

    Shapes:
        - probs: ``[K, h, w]``; image_grid: ``[3, h, w]``; valid_mask: ``[h, w]``
        - output: ``[]``
    """
    check_shape("probs", probs, "[K, h, w]", dims=3)
    if kernel is None:
        if image_grid is None:
            raise ValueError("give image_grid or a precomputed kernel")
        if tuple(image_grid.shape[1:]) != tuple(probs.shape[1:]):
            raise ValueError(f"image_grid grid {tuple(image_grid.shape[1:])} != probs grid "
                             f"{tuple(probs.shape[1:])}")
        kernel = potts_kernel(image_grid, radius, sigma_xy, sigma_rgb, valid_mask, shape)
    elif tuple(kernel.weight.shape[1:]) != tuple(probs.shape[1:]):
        raise ValueError(f"kernel grid {tuple(kernel.weight.shape[1:])} != probs grid "
                         f"{tuple(probs.shape[1:])}")

    agreement = pairwise_grid(_product, probs, kernel.offsets)            # <O_i, O_{i+o}>
    energy = (kernel.weight.to(probs.dtype) * (1.0 - agreement)).sum()
    return energy / kernel.num_nodes.to(probs.dtype)


def _product(center: Tensor, neighbour: Tensor) -> Tensor:
    """Inner product over the channel dimension: ``[..., C, h, w]`` pairs to ``[..., h, w]``."""
    return (center * neighbour).sum(dim=-3)
