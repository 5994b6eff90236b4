r"""Radius graph weighted by embedding affinity (docs/method.md §4 (3.8), §5 (3.14)).

Nodes ``i, j`` within radius ``r`` on the stride-8 grid are joined with weight

.. math::
    E_{ij} = \begin{cases} D(i, j) & D(i, j) > \tau \\ \text{no edge} & \text{otherwise}
    \end{cases}, \qquad D(i, j) = \exp\!\Big(-\frac{\lVert F(i) - F(j) \rVert_1}{d_A}\Big)

with ``F`` the affinity embedding (``d_A`` channels) and ``tau = 1e-3`` (3.14). Edges exist in
both directions (``D`` is symmetric) and every node has a self loop of weight ``D(i, i) = 1``.

Two registered builders share this class:

* ``"backbone"`` (:class:`RadiusGraphBuilder`): ``F`` is the ``embedding`` argument when given,
  else the backbone node features themselves (the backbone-feature L1-distance graph, used until
  an affinity CNN is trained);
* ``"affinity"`` (:class:`AffinityGraphBuilder`): ``F`` must be the learned affinity embedding
  ``F_A`` (``d_A = 448``); building without one is an error.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.base import (GraphBuilder, check_build_inputs, downsample_image,
                                   make_graph_data, register_builder)
from graphwsss.graphs.grid import (WindowShape, check_offsets, grid_to_edges, neighbor_valid,
                                   pairwise_grid, radius_offsets)


def _l1_distance(center: Tensor, neighbour: Tensor) -> Tensor:
    difference = center - neighbour
    return difference.abs_().sum(dim=-3)


def embedding_distance(embedding: Tensor, offsets: Tensor,
                       normalizer: float | None = None) -> Tensor:
    r"""Normalised L1 distance to each neighbour, :math:`\lVert F(i) - F(j) \rVert_1 / d_A`.

    This is the exponent of the affinity (3.8) and the distance term of :math:`L_{Ar}` (3.11).

    Args:
        embedding: ``[D, h, w]`` or ``[B, D, h, w]``.
        offsets: ``[O, 2]`` ``(dy, dx)`` window (:func:`~graphwsss.graphs.grid.radius_offsets`).
        normalizer: ``d_A``; default the number of channels ``D``.

    Returns:
        ``[O, h, w]`` or ``[B, O, h, w]``; ``0`` where the neighbour is outside the grid.
    """
    check_offsets(offsets)
    if embedding.ndim not in (3, 4) or not embedding.is_floating_point():
        raise ValueError(f"embedding must be a float [D, h, w] or [B, D, h, w] tensor, "
                         f"got {embedding.dtype} shape {tuple(embedding.shape)}")
    normalizer = embedding.shape[-3] if normalizer is None else normalizer
    if normalizer <= 0:
        raise ValueError(f"normalizer must be positive, got {normalizer}")
    distance = pairwise_grid(_l1_distance, embedding, offsets, symmetric=True)
    return distance / normalizer


def affinity_from_embedding(embedding: Tensor, offsets: Tensor,
                            normalizer: float | None = None) -> Tensor:
    r"""Affinity :math:`D(i, j) = \exp(-\lVert F(i) - F(j) \rVert_1 / d_A)` over a window (3.8).

    Differentiable (used by the affinity CNN's losses as well as by the graph builders).

    Args:
        embedding: ``[D, h, w]`` or ``[B, D, h, w]``.
        offsets: ``[O, 2]`` ``(dy, dx)``.
        normalizer: ``d_A``; default the number of channels ``D``.

    Returns:
        ``[O, h, w]`` or ``[B, O, h, w]`` in ``(0, 1]``; ``0`` where the neighbour is outside.
    """
    distance = embedding_distance(embedding, offsets, normalizer)
    valid = neighbor_valid(*embedding.shape[-2:], offsets, embedding.device)
    return torch.where(valid, torch.exp(-distance), torch.zeros_like(distance))


def _quantile(values: Tensor, q: float) -> Tensor:
    """The ``q``-quantile of a 1-d tensor of any length (``torch.quantile`` stops at 2**24)."""
    k = min(max(int(round(q * (values.numel() - 1))) + 1, 1), values.numel())
    return values.kthvalue(k).values


def calibrated_affinity(distance: Tensor, offsets: Tensor, valid: Tensor,
                        floor_quantile: float = 0.5, spread_quantile: float = 0.9,
                        scale: float = 0.5) -> Tensor:
    r"""Affinity on the image's own distance scale, for embeddings not trained as affinities.

    .. math::
        D(i, j) = \exp\!\Big(-\frac{\max(d_{ij} - d_0,\, 0)}{s}\Big), \qquad
        d_0 = Q_{0.5}\big(d_{ij} : j \text{ a 4-neighbour of } i\big), \quad
        s = 0.5\,\big(Q_{0.9}(d_{ij}) - d_0\big)

    with ``d`` the normalised L1 distance of :func:`embedding_distance` and the quantiles taken
    over the image's valid pairs. A pair no farther apart than a typical pair of adjacent cells
    (most of which lie in one region) is as related as a node to itself, ``D = 1``; beyond,
    ``D`` decays on the scale of the image's distance spread. Why: ImageNet features are not
    trained as affinities, and :math:`\exp(-d)` gives even adjacent cells of one object
    ``D`` ~ 0.3, against 1 for the self loop, so under the A²GNN's attention
    :math:`\operatorname{softmax}(\beta E)` with :math:`\beta = 10` a node keeps about 90 %
    of its own feature in every layer and the graph barely propagates.

    Args:
        distance: ``[O, h, w]`` normalised distances (0 where ``valid`` is false).
        offsets: ``[O, 2]``.
        valid: ``[O, h, w]`` pairs inside the grid.
        floor_quantile, spread_quantile, scale: ``0.5``, ``0.9``, ``0.5`` above.

    Returns:
        ``[O, h, w]`` in ``[0, 1]``, 0 where ``valid`` is false.
    """
    check_offsets(offsets)
    offsets = offsets.to(distance.device)
    is_self = (offsets == 0).all(dim=1).view(-1, 1, 1)
    adjacent = (offsets.abs().sum(dim=1) == 1).view(-1, 1, 1)
    pairs = valid & ~is_self
    near = pairs & adjacent
    if not near.any():             # a 1 x 1 grid: only self loops
        return torch.where(valid, torch.ones_like(distance), torch.zeros_like(distance))
    floor = _quantile(distance[near], floor_quantile)
    spread = (_quantile(distance[pairs], spread_quantile) - floor).clamp_min(1e-6)
    affinity = torch.exp(-(distance - floor).clamp_min(0) / (scale * spread))
    return torch.where(valid, affinity, torch.zeros_like(affinity))


def threshold_edges(kernel: Tensor, offsets: Tensor, threshold: float) -> Tensor:
    r"""Grid-form edge weights: ``kernel`` where ``kernel > threshold``, else 0 (3.14).

    Self loops (offset ``(0, 0)``) get weight 1 whatever the kernel and threshold.

    Args:
        kernel: ``[O, h, w]`` pairwise weights in ``[0, 1]``.
        offsets: ``[O, 2]``.
        threshold: ``tau``.

    Returns:
        ``[O, h, w]`` ``grid_weight``.
    """
    check_offsets(offsets)
    weight = torch.where(kernel > threshold, kernel, torch.zeros_like(kernel))
    is_self = (offsets == 0).all(dim=1).to(kernel.device)
    return torch.where(is_self.view(-1, 1, 1), torch.ones_like(weight), weight)


def radius_graph_data(features: Tensor, kernel: Tensor, offsets: Tensor, threshold: float,
                      seed_labels: Tensor | None = None) -> Data:
    """``Data`` of a grid radius graph from a pairwise kernel ``[O, h, w]`` (shared by builders).

    Thresholds the kernel (:func:`threshold_edges`), converts it to edges and adds the node
    fields; ``offsets`` and ``grid_weight`` are kept for shifted-window computations.
    """
    grid_weight = threshold_edges(kernel, offsets, threshold)
    edge_index, edge_weight = grid_to_edges(grid_weight, offsets)
    return make_graph_data(features, edge_index, edge_weight, seed_labels,
                           offsets=offsets, grid_weight=grid_weight)


def check_window_options(radius: int, threshold: float, shape: str) -> None:
    if isinstance(radius, bool) or int(radius) != radius or radius < 1:
        raise ValueError(f"radius must be a positive integer, got {radius!r}")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    if shape not in ("disc", "square"):
        raise ValueError(f"shape must be 'disc' or 'square', got {shape!r}")


@register_builder("backbone")
class RadiusGraphBuilder(GraphBuilder):
    r"""Radius graph with embedding-affinity weights, :math:`E_{ij} = D(i, j)` if
    :math:`D(i, j) > \tau` (3.14), self loops of weight 1.

    Args:
        radius: window radius ``r`` in grid units (docs/method.md §4: 4 for box/scribble, 3 for
            point/image-level).
        threshold: ``tau``; pairs with ``D(i, j) <= tau`` get no edge.
        shape: ``"disc"`` (paper) or ``"square"`` (reference code; ``r = 4`` on a VOC image then
            gives the ~220k edges of docs/method.md §5).

        calibrate: put :math:`D` on the image's own distance scale
            (:func:`calibrated_affinity`) instead of :math:`\exp(-d)`; for embeddings not
            trained as affinities (the ImageNet features of ``"backbone"``).
        colour: ``(sigma_xy, sigma_rgb)`` to multiply :math:`D(i, j)` by the RGB-XY kernel
            :math:`G(i, j)` of :mod:`graphwsss.graphs.rgbxy` (two affinity sources combined:
            the embedding says what belongs together, colour where the edges are); ``None``
            (default) keeps :math:`D` alone.

    The embedding is ``embedding`` when given, else ``features``. Building runs without
    autograd; all outputs are on ``features.device``.
    """

    requires_embedding = False

    def __init__(self, radius: int = 4, threshold: float = 1e-3, shape: WindowShape = "disc",
                 colour: tuple[float, float] | None = None, calibrate: bool = False):
        check_window_options(radius, threshold, shape)
        if colour is not None and not all(sigma > 0 for sigma in colour):
            raise ValueError(f"colour sigmas must be positive, got {colour}")
        self.radius = int(radius)
        self.threshold = float(threshold)
        self.shape = shape
        self.colour = colour
        self.calibrate = bool(calibrate)

    @torch.no_grad()
    def build(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
              embedding: Tensor | None = None) -> Data:
        check_build_inputs(image, features, seed_labels, embedding)
        if embedding is None:
            if self.requires_embedding:
                raise ValueError(f"the {self.name!r} graph builder needs the affinity embedding "
                                 "(embedding=[D, h, w]); use 'backbone' to build from features")
            embedding = features
        device = features.device
        compute_dtype = torch.promote_types(embedding.dtype, torch.float32)
        offsets = radius_offsets(self.radius, self.shape, device=device)
        embedding = embedding.to(device, compute_dtype)
        affinity = self.affinity(embedding, features.to(device, compute_dtype), offsets)
        if self.colour is not None:
            from graphwsss.graphs.rgbxy import rgbxy_kernel   # rgbxy imports this module

            colours = downsample_image(image.to(device, compute_dtype), *affinity.shape[-2:])
            affinity = affinity * rgbxy_kernel(colours, offsets, *self.colour)
        return radius_graph_data(features, affinity, offsets, self.threshold, seed_labels)

    def affinity(self, embedding: Tensor, features: Tensor, offsets: Tensor) -> Tensor:
        r"""``[O, h, w]`` :math:`D(i, j)` of the ``[D, h, w]`` embedding over ``offsets``:
        calibrated (``calibrate``) or :math:`\exp(-d)`."""
        if self.calibrate:
            return calibrated_embedding_affinity(embedding, offsets)
        return affinity_from_embedding(embedding, offsets)


def calibrated_embedding_affinity(embedding: Tensor, offsets: Tensor) -> Tensor:
    """:func:`calibrated_affinity` of a ``[D, h, w]`` embedding over ``offsets``."""
    valid = neighbor_valid(*embedding.shape[-2:], offsets, embedding.device)
    return calibrated_affinity(embedding_distance(embedding, offsets), offsets, valid)


@register_builder("affinity")
class AffinityGraphBuilder(RadiusGraphBuilder):
    r""":class:`RadiusGraphBuilder` on the learned affinity embedding ``F_A`` (required).

    Args:
        feature_affinity: multiply the learned :math:`D_A(i, j)` by the calibrated affinity of
            the node features (the ``backbone`` builder's, :func:`calibrated_affinity`):
            :math:`E_{ij} = D_A(i, j)\,D_X(i, j)`. Two sources combined: an edge needs both
            the trained embedding and the ImageNet features to join the pair, so where one of
            them cannot resolve a boundary (the learned embedding around objects of a node or
            two) the other still cuts it.
        The other arguments are :class:`RadiusGraphBuilder`'s.
    """

    requires_embedding = True

    def __init__(self, *args, feature_affinity: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_affinity = bool(feature_affinity)

    def affinity(self, embedding: Tensor, features: Tensor, offsets: Tensor) -> Tensor:
        affinity = super().affinity(embedding, features, offsets)
        if self.feature_affinity:
            affinity = affinity * calibrated_embedding_affinity(features, offsets)
        return affinity
