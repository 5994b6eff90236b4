"""Propagation networks over pixel graphs (docs/method.md §6): the A²GNN, its layer and baselines.

* :mod:`~graphwsss.nn.affinity_attention`: the affinity attention rule (3.17–3.18) and its PyG
  ``MessagePassing`` layer for any graph;
* :mod:`~graphwsss.nn.csr`: the sparse operators on edges sorted by target that the layers on
  general graphs share (edge softmax, sampled products, aggregation);
* :mod:`~graphwsss.nn.tiled_attention`: the affinity attention on grid radius graphs, tiled;
* :mod:`~graphwsss.nn.a2gnn`: the A²GNN (3.16–3.19), many images trained as one batched problem;
* :mod:`~graphwsss.nn.baselines`: GCN, GAT, AGNN and no-propagation baselines behind the same
  interface, and :func:`build_propagator` to pick one by name.
"""

from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.affinity_attention import (FORMS, AffinityAttentionConv, attention_logits,
                                             edge_attention)
from graphwsss.nn.baselines import (PROPAGATORS, AGNNPropagator, BatchedBaseline, GATPropagator,
                                    GCNPropagator, NoPropagator, build_propagator)
from graphwsss.nn.csr import CsrAdjacency, edge_aggregate
from graphwsss.nn.random_walk import (random_walk, random_walk_probabilities,
                                      seed_label_probabilities)
from graphwsss.nn.tiled_attention import (GridTiles, grid_affinity_attention, grid_tiles,
                                          tiled_affinity_attention)

__all__ = [
    "A2GNN", "AGNNPropagator", "AffinityAttentionConv", "BatchedBaseline", "CsrAdjacency",
    "FORMS", "GATPropagator", "GCNPropagator", "GridTiles", "NoPropagator", "PROPAGATORS",
    "attention_logits", "build_propagator", "edge_aggregate", "edge_attention",
    "grid_affinity_attention", "grid_tiles", "tiled_affinity_attention",
    "random_walk", "random_walk_probabilities", "seed_label_probabilities",
]
