r"""Superpixel region-adjacency graph, GraphNet style (docs/method.md §5).

Nodes are superpixels of the image, edges join adjacent superpixels:

* **superpixels** by SLIC or Felzenszwalb (:func:`superpixel_labels`). They are computed by
  scikit-image, which is numpy-only, so this one step runs on the CPU (the image is copied to
  the host once); everything after it runs on the device of ``features``.
* **nodes** are built from the stride-8 grid: each grid cell belongs to the superpixel under its
  centre pixel (:func:`cell_centre_pixels`: the pixel its seed comes from), and the superpixels
  hit by at least one centre are renumbered ``0..N-1``. So every node owns at least one cell,
  and ``cell_node`` ``[h * w]`` (the node of each cell) is defined for every cell; a superpixel
  that no centre hits (smaller than a cell, or thin) is not a node, and its pixels are left out
  of colours and adjacency.
* **node features**: the mean of the stride-8 features over the node's cells, L1-normalised
  (3.15); optionally followed by the node's mean colour divided by 3 (so that the colour part
  sums to at most 1, the scale of the L1-normalised feature part).
* **edges**: superpixels that touch, i.e. a horizontally or vertically adjacent pixel pair of the
  image, or of the cell grid, joins them (the second keeps nodes adjacent whose contact runs
  through a superpixel that is not a node). Both directions, plus a self loop of weight 1 per
  node. The edge weight is

  .. math::
      E_{ij} = \exp\!\Big(-\frac{\lVert c_i - c_j \rVert^2}{2 \sigma_{rgb}^2}\Big)
      \quad (\texttt{edge\_weight="rgb"}, \text{default})
      \qquad\text{or}\qquad
      E_{ij} = \exp\!\Big(-\frac{\lVert \bar F_i - \bar F_j \rVert_1}{d}\Big)
      \quad (\texttt{"feature"})

  with ``c`` the mean colour of the superpixel's pixels (``[0, 1]``, full resolution) and
  ``F̄`` the mean over its cells of ``embedding`` (when given) or of the raw ``features``
  (``d`` channels), the affinity of (3.8) on region means. Pairs with ``E_ij <= threshold`` get
  no edge (3.14).
* **seeds** ``y``: a node takes class ``c`` when every seeded cell among its cells says ``c`` and
  those cells make up at least ``min_seed_fraction`` of its cells (default one half: ``c`` is
  the majority of the node's cells); nodes with disagreeing seeds, or too few, are unlabeled
  (255), so that one node never carries two classes (:func:`majority_cell_labels`).
* ``pos``: the mean ``(row, col)`` of the node's cells; ``grid_shape`` ``(h, w)``.

Everything is vectorised (``unique``, ``bincount`` and ``index_add`` over pixels, cells and
pairs); there is no Python loop over pixels or superpixels and no ``N x N`` matrix.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.base import (IGNORE_INDEX, GraphBuilder, check_build_inputs,
                                   grid_positions, normalize_node_features, register_builder)
from graphwsss.utils.shapes import check_shape, describe

SuperpixelMethod = Literal["slic", "felzenszwalb"]
SuperpixelEdgeWeight = Literal["rgb", "feature"]


def superpixel_labels(image: Tensor, method: SuperpixelMethod = "slic", segments: int = 400,
                      compactness: float = 10.0, scale: float = 100.0, sigma: float = 0.8,
                      min_size: int = 64) -> Tensor:
    """Superpixels of one image, numbered ``0..S-1`` (scikit-image, on the CPU).

    Args:
        image: ``[3, H, W]`` float in ``[0, 1]`` (any device).
        method: ``"slic"`` (k-means in Lab + xy, ``segments`` and ``compactness``) or
            ``"felzenszwalb"`` (graph-based merging, ``scale``, ``sigma``, ``min_size``).
        segments: approximate number of SLIC superpixels.
        compactness: SLIC colour/space trade-off (scikit-image's default 10, Lab units).
        scale: Felzenszwalb's scale (higher: larger segments).
        sigma: Felzenszwalb's Gaussian pre-smoothing (pixels).
        min_size: Felzenszwalb's smallest segment (pixels; 64 = one 8 x 8 cell).

    Returns:
        ``[H, W]`` long on ``image.device``.
    """
    from skimage.segmentation import felzenszwalb, slic  # heavy import, only when used

    check_shape("image", image, "[3, H, W]", shape=(3, None, None))
    check_superpixel_options(method, segments, compactness, scale, sigma, min_size)
    # scikit-image works on numpy: the only host round trip of the superpixel builder.
    pixels = image.detach().permute(1, 2, 0).to("cpu", torch.float64).clamp(0, 1).numpy()
    if method == "slic":
        labels = slic(pixels, n_segments=int(segments), compactness=float(compactness),
                      start_label=0, channel_axis=-1)
    else:
        labels = felzenszwalb(pixels, scale=float(scale), sigma=float(sigma),
                              min_size=int(min_size), channel_axis=-1)
    # Renumber densely (slic may skip numbers after enforcing connectivity).
    _, dense = np.unique(labels, return_inverse=True)
    return torch.from_numpy(dense.reshape(labels.shape).astype(np.int64)).to(image.device)


def check_superpixel_options(method: str, segments: int, compactness: float, scale: float,
                             sigma: float, min_size: int) -> None:
    if method not in ("slic", "felzenszwalb"):
        raise ValueError(f"method must be 'slic' or 'felzenszwalb', got {method!r}")
    if isinstance(segments, bool) or int(segments) != segments or segments < 1:
        raise ValueError(f"segments must be a positive integer, got {segments!r}")
    if compactness <= 0 or scale <= 0 or sigma < 0:
        raise ValueError(f"compactness and scale must be positive and sigma non-negative, got "
                         f"compactness={compactness!r}, scale={scale!r}, sigma={sigma!r}")
    if isinstance(min_size, bool) or int(min_size) != min_size or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")


def cell_centre_pixels(height: int, width: int, h: int, w: int,
                       device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Image row of each grid row and image column of each grid column: the cell centres.

    The ``h x w`` node grid is the stride-``s`` grid of the image padded at the bottom and right
    (as the backbone's, ``h = ceil(height / s)``), so ``s = ceil(height / h)`` (per axis) and cell
    ``(y, x)`` is centred on pixel ``(y s + s // 2, x s + s // 2)``, clamped into the image for
    cells of the padded border: the same pixels as the node seeds
    (:func:`graphwsss.seeds.grid.grid_seeds`).

    Returns:
        ``rows`` ``[h]`` and ``cols`` ``[w]`` long.
    """
    if min(height, width, h, w) < 1:
        raise ValueError(f"image {height}x{width} and grid {h}x{w} must be non-empty")
    stride_y, stride_x = -(-height // h), -(-width // w)
    rows = torch.arange(h, device=device) * stride_y + stride_y // 2
    cols = torch.arange(w, device=device) * stride_x + stride_x // 2
    return rows.clamp_(max=height - 1), cols.clamp_(max=width - 1)


def majority_cell_labels(cell_labels: Tensor, cell_node: Tensor, num_nodes: int, *,
                         unanimous: bool = False, min_fraction: float = 0.0,
                         ignore_index: int = IGNORE_INDEX) -> Tensor:
    r"""Per node, the most frequent label of its cells (``ignore_index`` cells not counted).

    A node gets ``ignore_index`` when none of its cells is labelled, when ``unanimous`` and its
    labelled cells disagree, or when its winning label covers less than ``min_fraction`` of its
    cells (all cells counted, labelled or not). Ties go to the smaller label.

    Used for the seeds of superpixel nodes (``unanimous=True, min_fraction=0.5``) and for the
    ground-truth node labels of graph purity (defaults).

    Args:
        cell_labels: ``[h * w]`` (or any shape with as many entries as ``cell_node``) integer
            labels in ``[0, ignore_index]``.
        cell_node: ``[h * w]`` long node of each cell, in ``[0, num_nodes)``.
        num_nodes: ``N``.

    Returns:
        ``[N]`` long on ``cell_node.device``.
    """
    if cell_labels.is_floating_point() or cell_labels.numel() != cell_node.numel():
        raise ValueError(f"cell_labels must be an integer tensor with one entry per cell "
                         f"({cell_node.numel()}), got {describe(cell_labels)}")
    if not 0 <= min_fraction <= 1:
        raise ValueError(f"min_fraction must be in [0, 1], got {min_fraction!r}")
    device = cell_node.device
    labels = cell_labels.reshape(-1).to(device=device, dtype=torch.long)
    nodes = cell_node.reshape(-1).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > ignore_index):
        raise ValueError(f"cell_labels must lie in [0, {ignore_index}], got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
        raise ValueError(f"cell_node must lie in [0, {num_nodes}), got values in "
                         f"[{int(nodes.min())}, {int(nodes.max())}]")
    result = torch.full((num_nodes,), ignore_index, dtype=torch.long, device=device)
    labelled = labels != ignore_index
    if not bool(labelled.any()):
        return result
    num_labels = int(labels[labelled].max()) + 1
    counts = torch.bincount(nodes[labelled] * num_labels + labels[labelled],
                            minlength=num_nodes * num_labels).view(num_nodes, num_labels)
    best_count, best = counts.max(dim=1)  # first maximum: ties to the smaller label
    cells = torch.bincount(nodes, minlength=num_nodes)
    keep = (best_count > 0) & (best_count >= min_fraction * cells)
    if unanimous:
        keep &= best_count == counts.sum(dim=1)
    return torch.where(keep, best, result)


def region_adjacency(region: Tensor) -> Tensor:
    """Pairs of regions that touch in a label map (4-neighbourhood).

    Args:
        region: ``[H, W]`` long region index, negative for "no region" (such pixels join
            nothing).

    Returns:
        ``[2, P]`` long, each unordered pair once as ``(a, b)`` with ``a < b``, sorted.
    """
    if region.ndim != 2 or region.is_floating_point():
        raise ValueError(f"region must be an integer [H, W] map, got {describe(region)}")
    first = torch.cat([region[:, :-1].reshape(-1), region[:-1, :].reshape(-1)])
    second = torch.cat([region[:, 1:].reshape(-1), region[1:, :].reshape(-1)])
    keep = (first != second) & (first >= 0) & (second >= 0)
    pairs = torch.stack([torch.minimum(first[keep], second[keep]),
                         torch.maximum(first[keep], second[keep])])
    return torch.unique(pairs, dim=1)


def _scatter_mean(values: Tensor, index: Tensor, num_nodes: int) -> Tensor:
    """``[M, C]`` values averaged into ``[num_nodes, C]`` groups by ``index`` ``[M]``."""
    total = values.new_zeros(num_nodes, values.shape[1]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=num_nodes).clamp_min(1).to(values.dtype)
    return total / count.unsqueeze(1)


@register_builder("superpixel")
class SuperpixelGraphBuilder(GraphBuilder):
    r"""Region-adjacency graph of superpixels (GraphNet style); see the module docstring.

    Args:
        method: ``"slic"`` or ``"felzenszwalb"``.
        segments: SLIC superpixels per image (about; ``graph.superpixels``).
        compactness: SLIC compactness.
        scale, sigma, min_size: Felzenszwalb options.
        edge_weight: ``"rgb"`` (colour Gaussian, default) or ``"feature"`` (L1 affinity of the
            region-mean embedding/features).
        sigma_rgb: colour bandwidth of the ``"rgb"`` weight (image in ``[0, 1]``).
        threshold: ``tau``; adjacent pairs with ``E_ij <= tau`` get no edge (3.14).
        colour_features: append the mean colour (/3) to the node features.
        min_seed_fraction: share of a node's cells its seed must cover (see module docstring).

    Output ``Data``: ``x`` ``[N, C(+3)]``, ``edge_index`` ``[2, E]``, ``edge_attr`` ``[E]``,
    ``y`` ``[N]``, ``pos`` ``[N, 2]``, ``cell_node`` ``[h * w]``, ``grid_shape``, on
    ``features.device``; no ``offsets`` / ``grid_weight`` (not a window graph).
    """

    def __init__(self, method: SuperpixelMethod = "slic", segments: int = 400,
                 compactness: float = 10.0, scale: float = 100.0, sigma: float = 0.8,
                 min_size: int = 64, edge_weight: SuperpixelEdgeWeight = "rgb",
                 sigma_rgb: float = 0.1, threshold: float = 1e-3, colour_features: bool = False,
                 min_seed_fraction: float = 0.5):
        check_superpixel_options(method, segments, compactness, scale, sigma, min_size)
        if edge_weight not in ("rgb", "feature"):
            raise ValueError(f"edge_weight must be 'rgb' or 'feature', got {edge_weight!r}")
        if sigma_rgb <= 0:
            raise ValueError(f"sigma_rgb must be positive, got {sigma_rgb!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        if not 0 <= min_seed_fraction <= 1:
            raise ValueError(f"min_seed_fraction must be in [0, 1], got {min_seed_fraction!r}")
        self.method = method
        self.segments = int(segments)
        self.compactness = float(compactness)
        self.scale = float(scale)
        self.sigma = float(sigma)
        self.min_size = int(min_size)
        self.edge_weight = edge_weight
        self.sigma_rgb = float(sigma_rgb)
        self.threshold = float(threshold)
        self.colour_features = bool(colour_features)
        self.min_seed_fraction = float(min_seed_fraction)

    @torch.no_grad()
    def build(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
              embedding: Tensor | None = None) -> Data:
        h, w = check_build_inputs(image, features, seed_labels, embedding)
        device = features.device
        dtype = torch.promote_types(features.dtype, torch.float32)
        height, width = image.shape[-2:]
        segments = superpixel_labels(image, self.method, self.segments, self.compactness,
                                     self.scale, self.sigma, self.min_size).to(device)

        # Nodes = superpixels under at least one cell centre, renumbered 0..N-1.
        rows, cols = cell_centre_pixels(height, width, h, w, device)
        node_segment, cell_node = torch.unique(segments[rows][:, cols].reshape(-1),
                                               return_inverse=True)
        num_nodes = node_segment.numel()
        segment_node = torch.full((int(segments.max()) + 1,), -1, dtype=torch.long, device=device)
        segment_node[node_segment] = torch.arange(num_nodes, device=device)
        pixel_node = segment_node[segments]

        # Undirected adjacency from the image and from the cell grid, each pair once.
        pairs = torch.cat([region_adjacency(pixel_node), region_adjacency(cell_node.view(h, w))],
                          dim=1)
        pairs = torch.unique(pairs, dim=1)

        cell_features = features.to(device, dtype).flatten(1).t()
        x = normalize_node_features(_scatter_mean(cell_features, cell_node, num_nodes))
        on_node = pixel_node.reshape(-1) >= 0
        colour = _scatter_mean(image.to(device, dtype).flatten(1).t()[on_node],
                               pixel_node.reshape(-1)[on_node], num_nodes)
        if self.colour_features:
            x = torch.cat([x, colour / 3], dim=1)

        if self.edge_weight == "rgb":
            squared = (colour[pairs[0]] - colour[pairs[1]]).square().sum(dim=1)
            weight = torch.exp(-squared / (2 * self.sigma_rgb**2))
        else:
            source = features if embedding is None else embedding
            region_mean = _scatter_mean(source.to(device, dtype).flatten(1).t(), cell_node,
                                        num_nodes)
            l1 = (region_mean[pairs[0]] - region_mean[pairs[1]]).abs().sum(dim=1)
            weight = torch.exp(-l1 / region_mean.shape[1])
        keep = weight > self.threshold
        pairs, weight = pairs[:, keep], weight[keep]
        loops = torch.arange(num_nodes, device=device)
        source = torch.cat([pairs[0], pairs[1], loops])
        target = torch.cat([pairs[1], pairs[0], loops])
        edge_weight = torch.cat([weight, weight, torch.ones(num_nodes, device=device, dtype=dtype)])
        order = torch.argsort(target * num_nodes + source)  # by target, then source

        if seed_labels is None:
            y = torch.full((num_nodes,), IGNORE_INDEX, dtype=torch.long, device=device)
        else:
            if seed_labels.is_floating_point():
                raise ValueError(f"seed_labels must be an integer tensor, got "
                                 f"{describe(seed_labels)}")
            y = majority_cell_labels(seed_labels.to(device), cell_node, num_nodes,
                                     unanimous=True, min_fraction=self.min_seed_fraction)
        data = Data(x=x, edge_index=torch.stack([source[order], target[order]]),
                    edge_attr=edge_weight[order], y=y,
                    pos=_scatter_mean(grid_positions(h, w, device, dtype), cell_node, num_nodes),
                    cell_node=cell_node)
        data.grid_shape = (h, w)
        return data
