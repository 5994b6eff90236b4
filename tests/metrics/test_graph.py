"""Tests for graphwsss.metrics.graph: graph purity and node purity."""

import math

import pytest
import torch
from torch_geometric.data import Data

from graphwsss.metrics import graph_purity, node_ground_truth, node_purity, purity_weights


def test_purity_counts_weight_of_same_class_edges():
    #                    self same diff diff void void
    source = torch.tensor([0, 0, 1, 2, 3, 0])
    target = torch.tensor([0, 1, 2, 1, 0, 3])
    weight = torch.tensor([1.0, 0.6, 0.2, 0.3, 0.9, 0.9])
    labels = torch.tensor([4, 4, 7, 255])
    # counted: (0,1) 0.6 same, (1,2) 0.2 diff, (2,1) 0.3 diff; self loop and node 3 left out
    edge_index = torch.stack([source, target])
    assert purity_weights(edge_index, weight, labels) == pytest.approx((0.6, 1.1))
    assert graph_purity(edge_index, weight, labels) == pytest.approx(0.6 / 1.1)


def test_purity_edge_cases_and_bad_input():
    edge_index = torch.tensor([[0, 1], [1, 0]])
    assert graph_purity(edge_index, torch.ones(2), torch.tensor([3, 3])) == 1.0
    assert graph_purity(edge_index, torch.ones(2), torch.tensor([3, 5])) == 0.0
    assert math.isnan(graph_purity(edge_index, torch.ones(2), torch.tensor([255, 5])))
    with pytest.raises(ValueError, match="edge_index must be"):
        graph_purity(edge_index[0], torch.ones(2), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="edge_weight must be"):
        graph_purity(edge_index, torch.ones(3), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="node_labels must be"):
        graph_purity(edge_index, torch.ones(2), torch.tensor([3.0, 3.0]))
    with pytest.raises(ValueError, match="outside"):
        graph_purity(edge_index, torch.ones(2), torch.tensor([3]))


def test_node_ground_truth_and_node_purity_for_cell_and_region_graphs():
    cells = torch.tensor([[1, 1, 2],
                          [1, 255, 2]])
    grid_graph = Data(x=torch.zeros(6, 1))
    grid_graph.grid_shape = (2, 3)
    assert torch.equal(node_ground_truth(grid_graph, cells), cells.reshape(-1))
    assert node_purity(grid_graph, cells) == (5, 5)

    region_graph = Data(x=torch.zeros(2, 1), cell_node=torch.tensor([0, 0, 1, 0, 0, 1]))
    region_graph.grid_shape = (2, 3)
    # node 0 holds cells 1, 1, 1, 255 -> 1; node 1 holds 2, 2 -> 2
    assert node_ground_truth(region_graph, cells).tolist() == [1, 2]
    mixed = torch.tensor([[1, 2, 2], [1, 1, 2]])
    # node 0 holds 1, 2, 1, 1 -> 1 (3 of 4 cells agree); node 1 holds 2, 2
    assert node_purity(region_graph, mixed) == (5, 6)
    with pytest.raises(ValueError, match="h \\* w = 6"):
        node_ground_truth(region_graph, torch.tensor([1, 2]))
