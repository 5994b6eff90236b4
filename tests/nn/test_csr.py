"""Tests for graphwsss.nn.csr: edges sorted by target and the sparse operators on them."""

import pytest
import torch

from graphwsss.nn.csr import CsrAdjacency, edge_aggregate, edge_self_dot, segment_masked_softmax

from .attention_cases import random_graph


def test_adds_missing_self_loops_and_keeps_existing_weights():
    edge_index = torch.tensor([[1, 0], [0, 0]])  # node 0 has a self loop, node 1 none
    weight = torch.tensor([0.3, 0.7])
    adjacency = CsrAdjacency.from_edge_index(edge_index, weight, 2)
    edges = {(int(j), int(i)): (float(e), int(o)) for j, i, e, o in zip(
        adjacency.source, adjacency.target, adjacency.edge_weight, adjacency.order)}
    assert edges == {(1, 0): (pytest.approx(0.3), 0), (0, 0): (pytest.approx(0.7), 1),
                     (1, 1): (1.0, -1)}


def test_operators_equal_gathers_and_their_gradients():
    edge_index, edge_weight = random_graph(15, 80, seed=11)
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 15)
    x = torch.randn(15, 3, dtype=torch.float64, requires_grad=True)
    p = torch.rand(adjacency.num_edges, dtype=torch.float64, requires_grad=True)
    source, target = adjacency.source, adjacency.target
    torch.testing.assert_close(edge_self_dot(x, adjacency), (x[source] * x[target]).sum(1))
    expected = torch.zeros(15, 3, dtype=torch.float64).index_add(0, target, p[:, None] * x[source])
    torch.testing.assert_close(edge_aggregate(p, x, adjacency), expected)
    assert torch.autograd.gradcheck(lambda x: edge_self_dot(x, adjacency), (x,))
    assert torch.autograd.gradcheck(lambda p, x: edge_aggregate(p, x, adjacency), (p, x))


def test_segment_masked_softmax_sums_to_one_per_target_and_zero_without_edges():
    target = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.tensor([[0.5, 1.0], [2.0, float("-inf")], [float("-inf"), 0.0],
                           [float("-inf"), 3.0], [float("-inf"), float("-inf")]])
    weights = segment_masked_softmax(logits, target, 3)
    totals = torch.zeros(3, 2).index_add(0, target, weights)
    torch.testing.assert_close(totals, torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(weights[:2, 0], torch.softmax(torch.tensor([0.5, 2.0]), 0))


def test_input_validation():
    with pytest.raises(ValueError, match="edge_index"):
        CsrAdjacency.from_edge_index(torch.zeros(3, 4, dtype=torch.long), None, 4)
    with pytest.raises(ValueError, match="edge_weight"):
        CsrAdjacency.from_edge_index(torch.zeros(2, 4, dtype=torch.long), torch.ones(3), 4)
