r"""RGB-XY Gaussian kernel and the radius graph weighted by it (docs/method.md §4 (3.12), §5).

.. math::
    G(i, j) = \exp\!\Big(-\frac{\lVert p_i - p_j \rVert^2}{2 \sigma_{xy}^2}
                         -\frac{\lVert c_i - c_j \rVert^2}{2 \sigma_{rgb}^2}\Big)

with ``p`` the node position in grid units and ``c`` its mean colour in ``[0, 1]``. Defaults
``sigma_xy = 6``, ``sigma_rgb = 0.1``. The same kernel weights the affinity CNN's
:math:`L_{Ar}` (3.11) and the A²GNN's :math:`L_{reg}` (3.22), so :func:`rgbxy_kernel` takes
batches too. The ``"rgbxy"`` builder uses ``G`` as edge weight (instead of the learned
affinity), a baseline graph that needs no trained network.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.base import (GraphBuilder, check_build_inputs, downsample_image,
                                   register_builder)
from graphwsss.graphs.grid import (WindowShape, check_offsets, neighbor_valid, pairwise_grid,
                                   radius_offsets)
from graphwsss.graphs.radius import check_window_options, radius_graph_data


def _squared_l2_distance(center: Tensor, neighbour: Tensor) -> Tensor:
    difference = center - neighbour
    return difference.square_().sum(dim=-3)


def rgbxy_kernel(image_grid: Tensor, offsets: Tensor, sigma_xy: float = 6.0,
                 sigma_rgb: float = 0.1) -> Tensor:
    r"""RGB-XY Gaussian kernel :math:`G(i, j)` (3.12) between each node and its window.

    Args:
        image_grid: ``[3, h, w]`` or ``[B, 3, h, w]`` colours on the node grid
            (:func:`~graphwsss.graphs.grid.downsample_image`); any channel count is accepted.
        offsets: ``[O, 2]`` ``(dy, dx)`` window; positions are in grid units.
        sigma_xy: spatial bandwidth (grid units).
        sigma_rgb: colour bandwidth.

    Returns:
        ``[O, h, w]`` or ``[B, O, h, w]`` in ``(0, 1]``; ``0`` where the neighbour is outside the
        grid. Differentiable with respect to ``image_grid``.
    """
    check_offsets(offsets)
    if image_grid.ndim not in (3, 4) or not image_grid.is_floating_point():
        raise ValueError(f"image_grid must be a float [3, h, w] or [B, 3, h, w] tensor, "
                         f"got {image_grid.dtype} shape {tuple(image_grid.shape)}")
    if sigma_xy <= 0 or sigma_rgb <= 0:
        raise ValueError(f"sigma_xy and sigma_rgb must be positive, got {sigma_xy}, {sigma_rgb}")
    colour_sq = pairwise_grid(_squared_l2_distance, image_grid, offsets, symmetric=True)
    offsets = offsets.to(image_grid.device)
    position_sq = (offsets.to(image_grid.dtype) ** 2).sum(dim=1).view(-1, 1, 1)
    kernel = torch.exp(-position_sq / (2 * sigma_xy**2) - colour_sq / (2 * sigma_rgb**2))
    valid = neighbor_valid(*image_grid.shape[-2:], offsets, image_grid.device)
    return torch.where(valid, kernel, torch.zeros_like(kernel))


@register_builder("rgbxy")
class RGBXYGraphBuilder(GraphBuilder):
    r"""Radius graph with RGB-XY Gaussian weights, :math:`E_{ij} = G(i, j)` if
    :math:`G(i, j) > \tau`, self loops of weight 1.

    Node colours are the image averaged over each grid cell; node features ``x`` are the
    L1-normalised ``features`` (3.15). ``embedding`` is ignored.

    Args:
        radius: window radius in grid units.
        threshold: ``tau``.
        sigma_xy: spatial bandwidth (grid units).
        sigma_rgb: colour bandwidth (image in ``[0, 1]``).
        shape: ``"disc"`` or ``"square"`` window.
    """

    def __init__(self, radius: int = 4, threshold: float = 1e-3, sigma_xy: float = 6.0,
                 sigma_rgb: float = 0.1, shape: WindowShape = "disc"):
        check_window_options(radius, threshold, shape)
        if sigma_xy <= 0 or sigma_rgb <= 0:
            raise ValueError(f"sigma_xy and sigma_rgb must be positive, "
                             f"got {sigma_xy}, {sigma_rgb}")
        self.radius = int(radius)
        self.threshold = float(threshold)
        self.sigma_xy = float(sigma_xy)
        self.sigma_rgb = float(sigma_rgb)
        self.shape = shape

    @torch.no_grad()
    def build(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
              embedding: Tensor | None = None) -> Data:
        h, w = check_build_inputs(image, features, seed_labels, embedding)
        device = features.device
        compute_dtype = torch.promote_types(image.dtype, torch.float32)
        colours = downsample_image(image.to(device, compute_dtype), h, w)
        offsets = radius_offsets(self.radius, self.shape, device=device)
        kernel = rgbxy_kernel(colours, offsets, self.sigma_xy, self.sigma_rgb)
        return radius_graph_data(features, kernel, offsets, self.threshold, seed_labels)
