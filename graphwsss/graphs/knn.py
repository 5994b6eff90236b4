r"""k-nearest-neighbour graph in feature space (docs/method.md §5).

Nodes are the stride-8 grid cells, as in the radius graphs, but each node ``i`` is joined to the
``k`` nodes nearest to it in feature space, wherever they lie in the image:

.. math::
    \mathcal{N}_k(i) = \operatorname{arg\,k\text{-}min}_{j \ne i} \lVert F(i) - F(j) \rVert_1,
    \qquad
    E_{ij} = \exp\!\Big(-\frac{\lVert F(i) - F(j) \rVert_1}{d}\Big) \text{ if } > \tau

for ``j`` in ``N_k(i)`` or ``i`` in ``N_k(j)`` (the union: the graph is symmetric), plus a self
loop of weight 1 per node. ``F`` is the ``embedding`` when given, else the node features, and
``d`` its channel count: the affinity of (3.8) and the ``"backbone"`` radius graph
(:mod:`graphwsss.graphs.radius`), so the two graphs differ only in who is a neighbour (a window
against the k nearest) and their weights mean the same thing.

Why raw and not L1-normalised features (3.15) for ``F``: with normalised features every L1
distance is at most 2, so ``exp(-L1 / d)`` is ~0.999 for every edge (no information); the
neighbour ranking is as good either way (measured on the MSRC sample: 92-96 % of the 16 nearest
neighbours share the node's ground-truth class in both spaces). ``x`` is L1-normalised as usual.

Distances are computed for a block of ``chunk_size`` rows against all nodes at a time
(``torch.cdist``, ``p=1``), so memory is ``O(chunk_size x N)``, never ``N x N``.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.base import (GraphBuilder, check_build_inputs, make_graph_data,
                                   register_builder)


def knn_edges(points: Tensor, k: int, chunk_size: int = 512) -> tuple[Tensor, Tensor]:
    r"""Symmetric k-nearest-neighbour edges under the L1 distance, without self loops.

    Each point is joined to its ``min(k, N - 1)`` nearest other points; the union with the
    reversed edges makes the graph symmetric (a pair appears once per direction).

    Args:
        points: ``[N, D]`` float.
        k: neighbours per point (``>= 1``).
        chunk_size: rows of the ``[chunk_size, N]`` distance block computed at a time.

    Returns:
        ``edge_index`` ``[2, E]`` long (``[source, target]``, sorted by target then source) and
        ``distance`` ``[E]``: :math:`\lVert p_j - p_i \rVert_1`, equal for both directions.
    """
    if not isinstance(points, Tensor) or points.ndim != 2 or not points.is_floating_point():
        shape = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"points must be a float [N, D] tensor, got {shape}")
    check_positive_int(k, "k")
    check_positive_int(chunk_size, "chunk_size")
    num_nodes, device = points.shape[0], points.device
    k, chunk_size = min(int(k), num_nodes - 1), int(chunk_size)
    if k < 1:
        return (torch.empty(2, 0, dtype=torch.long, device=device),
                points.new_empty(0))
    sources, targets, distances = [], [], []
    for start in range(0, num_nodes, chunk_size):  # blocks of rows, not pixels
        rows = torch.arange(start, min(start + chunk_size, num_nodes), device=device)
        block = torch.cdist(points[rows], points, p=1)
        block[torch.arange(rows.numel(), device=device), rows] = float("inf")  # not itself
        distance, neighbour = block.topk(k, dim=1, largest=False)
        sources.append(neighbour.reshape(-1))
        targets.append(rows.repeat_interleave(k))
        distances.append(distance.reshape(-1))
    source, target, distance = torch.cat(sources), torch.cat(targets), torch.cat(distances)
    # Union of both directions: one entry per unordered pair, its distance from either side.
    low, high = torch.minimum(source, target), torch.maximum(source, target)
    pair_key, inverse = torch.unique(low * num_nodes + high, return_inverse=True)
    pair_distance = distance.new_full((pair_key.numel(),), float("inf")).scatter_reduce_(
        0, inverse, distance, reduce="amin")
    low = torch.div(pair_key, num_nodes, rounding_mode="floor")
    high = pair_key % num_nodes
    source, target = torch.cat([low, high]), torch.cat([high, low])
    distance = torch.cat([pair_distance, pair_distance])
    order = torch.argsort(target * num_nodes + source)
    return torch.stack([source[order], target[order]]), distance[order]


def check_positive_int(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@register_builder("knn")
class KNNGraphBuilder(GraphBuilder):
    r"""k-nearest-neighbour graph of the grid cells in feature space; see the module docstring.

    Args:
        k: neighbours per node before symmetrisation (``graph.knn_k``); ``min(k, N - 1)`` on
            graphs with fewer nodes.
        threshold: ``tau``; neighbour pairs with ``E_ij <= tau`` get no edge (3.14).
        chunk_size: rows of the distance block (memory ``O(chunk_size x N)``).

    Output ``Data``: the common fields of :mod:`graphwsss.graphs.base` (``x`` ``[h * w, C]``,
    ``edge_index``, ``edge_attr``, ``y``, ``pos``, ``grid_shape``) on ``features.device``; no
    ``offsets`` / ``grid_weight`` (not a window graph), no ``cell_node`` (nodes are the cells).
    """

    def __init__(self, k: int = 16, threshold: float = 1e-3, chunk_size: int = 512):
        check_positive_int(k, "k")
        check_positive_int(chunk_size, "chunk_size")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        self.k = int(k)
        self.threshold = float(threshold)
        self.chunk_size = int(chunk_size)

    @torch.no_grad()
    def build(self, image: Tensor, features: Tensor, seed_labels: Tensor | None = None,
              embedding: Tensor | None = None) -> Data:
        h, w = check_build_inputs(image, features, seed_labels, embedding)
        device = features.device
        source = features if embedding is None else embedding
        points = source.to(device, torch.promote_types(source.dtype, torch.float32))
        points = points.flatten(1).t().contiguous()
        edge_index, distance = knn_edges(points, self.k, self.chunk_size)
        weight = torch.exp(-distance / points.shape[1])
        keep = weight > self.threshold
        loops = torch.arange(h * w, device=device)
        source_node = torch.cat([edge_index[0, keep], loops])
        target_node = torch.cat([edge_index[1, keep], loops])
        edge_weight = torch.cat([weight[keep], torch.ones_like(loops, dtype=weight.dtype)])
        order = torch.argsort(target_node * (h * w) + source_node)
        return make_graph_data(features, torch.stack([source_node[order], target_node[order]]),
                               edge_weight[order], seed_labels)
