"""Propagation networks over pixel graphs (docs/method.md §6): the A²GNN, its layer and baselines.

* :mod:`~graphwsss.nn.affinity_attention`: the affinity attention layer (3.17–3.18), as a PyG
  ``MessagePassing`` layer for any graph and as a shifted-window function for grid radius graphs;
* :mod:`~graphwsss.nn.a2gnn`: the A²GNN (3.16–3.19), many images trained as one batched problem;
* :mod:`~graphwsss.nn.baselines`: GCN, GAT, AGNN and no-propagation baselines behind the same
  interface, and :func:`build_propagator` to pick one by name.
"""

from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.affinity_attention import (FORMS, AffinityAttentionConv, CsrAdjacency,
                                             GridTiles, attention_logits, edge_aggregate,
                                             edge_attention, grid_affinity_attention, grid_tiles,
                                             tiled_affinity_attention)
from graphwsss.nn.baselines import PROPAGATORS, BatchedBaseline, build_propagator
from graphwsss.nn.random_walk import (random_walk, random_walk_probabilities,
                                      seed_label_probabilities)

__all__ = [
    "A2GNN", "AffinityAttentionConv", "BatchedBaseline", "CsrAdjacency", "FORMS", "GridTiles",
    "PROPAGATORS", "attention_logits", "build_propagator", "edge_aggregate", "edge_attention",
    "grid_affinity_attention", "grid_tiles", "tiled_affinity_attention",
    "random_walk", "random_walk_probabilities", "seed_label_probabilities",
]
