"""Tests for graphwsss.nn.random_walk (PSA-style random-walk propagation)."""

import pytest
import torch
from torch_geometric.data import Data

from graphwsss.graphs.base import build_graph_builder
from graphwsss.graphs.grid import grid_to_edges, neighbor_valid, radius_offsets
from graphwsss.nn import random_walk, random_walk_probabilities, seed_label_probabilities
from graphwsss.nn.random_walk import step_length, transition_matrix, transition_power


def grid_graph(height, width, radius=1, seed=0, dtype=torch.float64):
    """Symmetric radius graph with random weights in (0.2, 1] and self loops of weight 1."""
    generator = torch.Generator().manual_seed(seed)
    offsets = radius_offsets(radius, "square")
    # Symmetric weights: a weight per node and offset pair {o, -o} from a node embedding.
    embedding = torch.rand(height, width, generator=generator, dtype=dtype)
    grid_weight = torch.zeros(offsets.shape[0], height, width, dtype=dtype)
    for k, (dy, dx) in enumerate(offsets.tolist()):
        shifted = torch.roll(embedding, shifts=(-dy, -dx), dims=(0, 1))
        grid_weight[k] = 1.0 - 0.8 * (embedding - shifted).abs()
    grid_weight *= neighbor_valid(height, width, offsets)
    return grid_to_edges(grid_weight, offsets)


def dense_reference(edge_index, edge_weight, scores, num_nodes, beta, log_steps):
    affinity = torch.zeros(num_nodes, num_nodes, dtype=edge_weight.dtype)
    affinity.index_put_((edge_index[1], edge_index[0]), edge_weight.pow(beta), accumulate=True)
    transition = affinity / affinity.sum(1, keepdim=True)
    return torch.linalg.matrix_power(transition, 2**log_steps) @ scores


@pytest.mark.parametrize("method", ["matvec", "squaring"])
def test_matches_dense_reference_on_tiny_graph(method):
    edge_index, edge_weight = grid_graph(4, 5, seed=1)
    scores = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = dense_reference(edge_index, edge_weight, scores, 20, beta=3.0, log_steps=4)
    result = random_walk(edge_index, edge_weight, scores, 20, beta=3.0, log_steps=4,
                         method=method, tolerance=0.0)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)


def test_pruned_squaring_close_to_matvec_and_fill_bounded():
    edge_index, edge_weight = grid_graph(12, 10, radius=2, seed=3)
    num_nodes = 120
    scores = torch.softmax(torch.randn(num_nodes, 4, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(4)) * 3, dim=1)
    exact = random_walk(edge_index, edge_weight, scores, num_nodes, log_steps=3)
    pruned = random_walk(edge_index, edge_weight, scores, num_nodes, log_steps=3,
                         method="squaring", tolerance=1e-4)
    assert (pruned - exact).abs().max().item() < 1e-2
    # Without pruning the 8-step walk reaches more entries than 1 / tolerance allows per row.
    transition = transition_matrix(edge_index, edge_weight, num_nodes)
    for tolerance in (1e-2, 5e-2):
        power = transition_power(transition, log_steps=3, tolerance=tolerance)
        per_row = torch.bincount(power.indices()[0], minlength=num_nodes)
        assert int(per_row.max()) <= 1 / tolerance
        torch.testing.assert_close(torch.sparse.sum(power, 1).to_dense(),
                                   torch.ones(num_nodes, dtype=torch.float64))
    unpruned = transition_power(transition, log_steps=3, tolerance=0.0)
    assert unpruned._nnz() > num_nodes / 5e-2


def test_squaring_refuses_too_much_fill():
    edge_index, edge_weight = grid_graph(12, 10, radius=2, seed=5)
    transition = transition_matrix(edge_index, edge_weight, 120)
    with pytest.raises(ValueError, match="max_products"):
        transition_power(transition, log_steps=4, tolerance=0.0, max_products=10_000)


def test_rows_are_stochastic_and_isolated_nodes_keep_their_score():
    edge_index, edge_weight = grid_graph(3, 3, seed=6, dtype=torch.float32)
    # Node 9 has no edge at all (a 10th node outside the grid).
    scores = torch.rand(10, 5)
    scores = scores / scores.sum(1, keepdim=True)
    result = random_walk(edge_index, edge_weight, scores, 10, log_steps=5)
    torch.testing.assert_close(result.sum(1), torch.ones(10))
    torch.testing.assert_close(result[9], scores[9])
    constant = random_walk(edge_index, edge_weight, torch.full((10, 2), 0.25), 10)
    torch.testing.assert_close(constant, torch.full((10, 2), 0.25))


def test_propagates_seeds_within_colour_regions():
    image = torch.zeros(3, 48, 64)
    image[:, :, 32:] = 1.0                             # dark left half, bright right half
    graph = build_graph_builder("rgbxy", radius=2)(image, torch.rand(4, 6, 8))
    seeds = torch.full((6, 8), 255, dtype=torch.long)
    seeds[0, 0], seeds[5, 7] = 1, 2                    # one seed in each half
    initial = seed_label_probabilities(seeds, num_classes=3)
    probs = random_walk_probabilities(graph, initial, beta=8.0, log_steps=6)
    assert probs.shape == (3, 6, 8)
    torch.testing.assert_close(probs.sum(0), torch.ones(6, 8))
    labels = probs.argmax(0)
    assert (labels[:, :4] == 1).all() and (labels[:, 4:] == 2).all()
    squared = random_walk_probabilities(graph, initial, beta=8.0, log_steps=6,
                                        method="squaring", tolerance=1e-6)
    assert (squared.argmax(0) == labels).all()


def test_nodes_covering_several_cells():
    # 2 nodes over a 1x4 grid: cells 0,1 -> node 0, cells 2,3 -> node 1; no edge between them.
    graph = Data(x=torch.ones(2, 1), edge_index=torch.tensor([[0, 1], [0, 1]]),
                 edge_attr=torch.ones(2))
    graph.grid_shape = (1, 4)
    graph.cell_node = torch.tensor([0, 0, 1, 1])
    initial = torch.tensor([[[1.0, 0.0, 0.2, 0.4]], [[0.0, 1.0, 0.8, 0.6]]])
    probs = random_walk_probabilities(graph, initial, log_steps=2)
    expected = torch.tensor([[[0.5, 0.5, 0.3, 0.3]], [[0.5, 0.5, 0.7, 0.7]]])
    torch.testing.assert_close(probs, expected)


def test_node_steps_stop_each_node_after_its_own_steps():
    edge_index, edge_weight = grid_graph(4, 5, seed=1)
    scores = torch.rand(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    node_steps = torch.arange(20) % 5                  # 0..4 steps, log_steps 2 allows up to 4
    result = random_walk(edge_index, edge_weight, scores, 20, beta=3.0, log_steps=2,
                         node_steps=node_steps)
    transition = transition_matrix(edge_index, edge_weight, 20, beta=3.0).to_dense()
    for node in range(20):
        walked = torch.linalg.matrix_power(transition, int(node_steps[node])) @ scores
        torch.testing.assert_close(result[node], walked[node])
    full = random_walk(edge_index, edge_weight, scores, 20, beta=3.0, log_steps=2)
    torch.testing.assert_close(random_walk(edge_index, edge_weight, scores, 20, beta=3.0,
                                           log_steps=2, node_steps=torch.full((20,), 4)), full)
    with pytest.raises(ValueError, match="node_steps must be in 0..4"):
        random_walk(edge_index, edge_weight, scores, 20, log_steps=2, node_steps=node_steps + 1)
    with pytest.raises(ValueError, match="matvec"):
        random_walk(edge_index, edge_weight, scores, 20, log_steps=2, node_steps=node_steps,
                    method="squaring")
    with pytest.raises(ValueError, match="node_steps must be"):
        random_walk(edge_index, edge_weight, scores, 20, log_steps=2, node_steps=node_steps[:5])


def test_cell_steps_take_the_fewest_of_a_nodes_cells():
    # 2 nodes over a 1x4 grid joined by an edge; node 0's cells ask for 0 and 2 steps.
    graph = Data(x=torch.ones(2, 1), edge_index=torch.tensor([[0, 1, 0, 1], [0, 1, 1, 0]]),
                 edge_attr=torch.ones(4))
    graph.grid_shape = (1, 4)
    graph.cell_node = torch.tensor([0, 0, 1, 1])
    initial = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]])
    probs = random_walk_probabilities(graph, initial, log_steps=1,
                                      cell_steps=torch.tensor([[0, 2, 2, 2]]))
    expected = torch.tensor([[[1.0, 1.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]]])
    torch.testing.assert_close(probs, expected)


def test_step_length_is_the_root_mean_square_move():
    # A 1 x 3 chain with self loops, equal weights: the ends move 1 cell with probability 1/2,
    # the middle with probability 2/3.
    graph = Data(x=torch.ones(3, 1), edge_index=torch.tensor([[0, 1, 2, 0, 1, 1, 2],
                                                               [0, 1, 2, 1, 0, 2, 1]]),
                 edge_attr=torch.ones(7), pos=torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]]))
    graph.grid_shape = (1, 3)
    assert step_length(graph) == pytest.approx(((0.5 + 2 / 3 + 0.5) / 3) ** 0.5)
    # Nodes over several cells move between their cells' mean positions.
    graph = Data(x=torch.ones(2, 1), edge_index=torch.tensor([[0, 1, 0, 1], [0, 1, 1, 0]]),
                 edge_attr=torch.ones(4), pos=torch.tensor([[0.0, 0.5], [0.0, 2.5]]))
    graph.grid_shape = (1, 4)
    graph.cell_node = torch.tensor([0, 0, 1, 1])          # positions 0.5 and 2.5
    assert step_length(graph) == pytest.approx((0.5 * 4.0) ** 0.5)


def test_seed_label_probabilities():
    seeds = torch.tensor([[0, 2], [255, 255]])
    allowed = torch.ones(3, 2, 2, dtype=torch.bool)
    allowed[1, 1, 1] = False                         # cell (1, 1) may only be 0 or 2
    probs = seed_label_probabilities(seeds, 3, allowed)
    torch.testing.assert_close(probs[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(probs[:, 0, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(probs[:, 1, 0], torch.full((3,), 1 / 3))
    torch.testing.assert_close(probs[:, 1, 1], torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="seed_labels must be in"):
        seed_label_probabilities(torch.tensor([[3]]), 3)
    with pytest.raises(ValueError, match="without any class"):
        seed_label_probabilities(torch.tensor([[255]]), 2, torch.zeros(2, 1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="allowed must be"):
        seed_label_probabilities(seeds, 3, torch.ones(2, 2, 2, dtype=torch.bool))


@pytest.mark.parametrize("kwargs, message", [
    (dict(edge_index=torch.tensor([[0, 5], [0, 1]])), "outside"),
    (dict(edge_index=torch.tensor([0, 1])), "edge_index must be"),
    (dict(edge_weight=torch.tensor([1.0, -1.0])), "non-negative"),
    (dict(edge_weight=torch.tensor([1.0])), "edge_weight must be"),
    (dict(scores=torch.rand(3, 2)), "rows"),
    (dict(method="dense"), "method"),
    (dict(beta=0.0), "beta"),
    (dict(log_steps=-1), "log_steps"),
])
def test_bad_input_errors(kwargs, message):
    arguments = dict(edge_index=torch.tensor([[0, 1], [1, 0]]), edge_weight=torch.ones(2),
                     scores=torch.rand(2, 2), num_nodes=2)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        random_walk(**arguments)


def test_probabilities_shape_error():
    graph = build_graph_builder("rgbxy", radius=1)(torch.rand(3, 16, 16), torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="initial_probs must be"):
        random_walk_probabilities(graph, torch.rand(3, 3, 2))
