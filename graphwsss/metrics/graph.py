r"""Graph purity: how much of a graph's edge weight stays inside one ground-truth class (§5).

For a graph with edges ``(j, i)`` of weight ``E_ij`` and ground-truth node labels ``g``:

.. math::
    \mathrm{purity} = \frac{\sum_{(j, i) \in \mathcal{E}'} E_{ij}\,[g_i = g_j]}
                           {\sum_{(j, i) \in \mathcal{E}'} E_{ij}},
    \qquad \mathcal{E}' = \{(j, i) : i \ne j,\; g_i \ne 255,\; g_j \ne 255\}

Self loops are left out (they join a node to itself and would count as pure whatever the graph),
and so are edges touching a node without ground truth (255: void, or no labelled cell). A graph
whose propagation cannot leak between classes has purity 1. Node labels come from the ground
truth on the stride-8 grid; for graphs whose nodes cover several cells (superpixels) a node takes
the majority label of its cells (:func:`node_ground_truth`), so purity there says nothing about
the mixing *inside* a node: :func:`node_purity` measures that (1 for graphs of grid cells).

Over a data set, sum the two weights of :func:`purity_weights` over images (weight-pooled).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs import cell_node_index, majority_cell_labels
from graphwsss.utils.shapes import check_shape

IGNORE_INDEX = 255


def purity_weights(edge_index: Tensor, edge_weight: Tensor, node_labels: Tensor,
                   ignore_index: int = IGNORE_INDEX) -> tuple[float, float]:
    """``(same-class weight, counted weight)``: numerator and denominator of the purity.

    Args:
        edge_index: ``[2, E]`` long.
        edge_weight: ``[E]`` non-negative.
        node_labels: ``[N]`` integer ground-truth class per node, ``ignore_index`` = unknown.
        ignore_index: label of nodes left out.

    Returns:
        Two Python floats.
    """
    check_shape("edge_index", edge_index, "[2, E]", shape=(2, None))
    check_shape("edge_weight", edge_weight, f"[E] = [{edge_index.shape[1]}]",
                shape=(edge_index.shape[1],))
    check_shape("node_labels", node_labels, "[N]", dims=1, dtype="integer")
    if edge_index.numel() and (int(edge_index.min()) < 0
                               or int(edge_index.max()) >= node_labels.numel()):
        raise ValueError(f"edge_index refers to nodes outside [0, {node_labels.numel()})")
    labels = node_labels.to(edge_index.device)
    source, target = edge_index
    counted = ((source != target) & (labels[source] != ignore_index)
               & (labels[target] != ignore_index))
    weight = edge_weight.to(edge_index.device, torch.float64)
    same = counted & (labels[source] == labels[target])
    return float(weight[same].sum()), float(weight[counted].sum())


def graph_purity(edge_index: Tensor, edge_weight: Tensor, node_labels: Tensor,
                 ignore_index: int = IGNORE_INDEX) -> float:
    """Share of edge weight joining nodes of the same ground-truth class (module docstring).

    Args:
        edge_index: ``[2, E]`` long (self loops allowed; they are not counted).
        edge_weight: ``[E]`` non-negative.
        node_labels: ``[N]`` integer, ``ignore_index`` = unknown.

    Returns:
        Purity in ``[0, 1]``; NaN when no edge is counted.
    """
    same, counted = purity_weights(edge_index, edge_weight, node_labels, ignore_index)
    return same / counted if counted > 0 else float("nan")


def node_ground_truth(graph: Data, cell_labels: Tensor,
                      ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``[N]`` ground-truth label per node: the majority label of its cells (void not counted).

    Args:
        graph: a builder's ``Data`` (``grid_shape``, optional ``cell_node``).
        cell_labels: ``[h, w]`` (or ``[h * w]``) integer ground truth on the node grid.
    """
    h, w = graph.grid_shape
    if cell_labels.numel() != h * w:
        raise ValueError(f"cell_labels must have h * w = {h * w} entries for the {h}x{w} grid, "
                         f"got shape {tuple(cell_labels.shape)}")
    return majority_cell_labels(cell_labels, cell_node_index(graph), graph.num_nodes,
                                ignore_index=ignore_index)


def node_purity(graph: Data, cell_labels: Tensor,
                ignore_index: int = IGNORE_INDEX) -> tuple[int, int]:
    """``(cells agreeing with their node's label, non-void cells)`` for one graph.

    With node labels from :func:`node_ground_truth`, the share of non-void cells whose ground
    truth is their node's label: the best a propagator predicting one class per node can do.
    """
    node_labels = node_ground_truth(graph, cell_labels, ignore_index)
    cells = cell_labels.reshape(-1).to(node_labels.device)
    valid = cells != ignore_index
    agree = valid & (node_labels[cell_node_index(graph)] == cells)
    return int(agree.sum()), int(valid.sum())
