"""Batched transductive training: batch == one at a time, grid == edge layout, losses wired,
any graph (superpixel-like nodes, no grid form), and the random-walk propagator."""

import dataclasses
import logging

import pytest
import torch
from torch_geometric.data import Data

from graphwsss.data import Box
from graphwsss.graphs import build_graph_builder
from graphwsss.losses import boxes_to_grid
from graphwsss.nn.random_walk import (random_walk_probabilities, seed_label_probabilities,
                                      step_length)
from graphwsss.settings import PropagatorSettings
from graphwsss.stages.propagate import (PropagationItem, box_allowed_classes, box_walk_steps,
                                        stack_graphs,
                                        train_propagator, walk_output)

NUM_CLASSES = 3
SETTINGS = PropagatorSettings(epochs_first=6, epochs_second=6, hidden=16, reg_weight=0.3)


def _item(image_id: str, height: int, width: int, seed: int) -> PropagationItem:
    generator = torch.Generator().manual_seed(seed)
    h, w = -(-height // 8), -(-width // 8)
    image = torch.rand(3, height, width, generator=generator)
    features = torch.rand(12, h, w, generator=generator)
    box = Box(8, 8, width - 8, height - 4, 1 + seed % 2)
    node_seeds = torch.full((h, w), 255, dtype=torch.long)
    node_seeds[0, :] = 0
    node_seeds[h // 2, w // 2] = box.class_id
    graph = build_graph_builder("backbone", radius=2).build(image, features, node_seeds)
    pixel_seeds = node_seeds.repeat_interleave(8, 0).repeat_interleave(8, 1)[:height, :width]
    boxes, classes = boxes_to_grid([box], (h * 8, w * 8), (h, w))
    return PropagationItem(image_id, graph, image, pixel_seeds, boxes, classes, stride=8)


ITEMS = [_item("a", 48, 64, 0), _item("b", 40, 40, 1), _item("c", 56, 32, 2)]


@pytest.mark.parametrize("layout", ["edges", "grid"])
def test_batched_equals_one_at_a_time(layout):
    settings = dataclasses.replace(SETTINGS, layout=layout)
    batched = train_propagator(ITEMS, settings, NUM_CLASSES, torch.device("cpu"), seed=3)
    for item, probs in zip(ITEMS, batched):
        alone = train_propagator([item], settings, NUM_CLASSES, torch.device("cpu"), seed=3)[0]
        assert probs.shape == (NUM_CLASSES, *item.grid_shape)
        torch.testing.assert_close(probs, alone, atol=1e-4, rtol=1e-4)


def test_layouts_agree_and_image_level_ce_runs():
    grid = train_propagator(ITEMS, dataclasses.replace(SETTINGS, layout="grid"), NUM_CLASSES,
                            torch.device("cpu"))
    edges = train_propagator(ITEMS, SETTINGS, NUM_CLASSES, torch.device("cpu"))
    for a, b in zip(grid, edges):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    image_level = train_propagator(ITEMS, dataclasses.replace(SETTINGS, ce_on_image=True),
                                   NUM_CLASSES, torch.device("cpu"))
    assert all(torch.allclose(p.sum(0), torch.ones(())) for p in image_level)


def test_training_fits_the_seeds():
    settings = dataclasses.replace(SETTINGS, epochs_first=100, epochs_second=0, multi_point=False,
                                   consistency=False)
    for item, probs in zip(ITEMS, train_propagator(ITEMS, settings, NUM_CLASSES, torch.device("cpu"))):
        seeds = item.graph.y.view(item.grid_shape)
        known = seeds != 255
        accuracy = (probs.argmax(0)[known] == seeds[known]).float().mean()
        assert accuracy > 0.9


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn", "none"])
def test_baseline_propagators_run(name):
    settings = dataclasses.replace(SETTINGS, name=name, epochs_first=2, epochs_second=1)
    probs = train_propagator(ITEMS[:2], settings, NUM_CLASSES, torch.device("cpu"))
    assert [p.shape[1:] for p in probs] == [item.grid_shape for item in ITEMS[:2]]


# --------------------------------------------------------------------------------------------
# General graphs: nodes that are not the grid cells (cell_node), graphs without grid_weight.
# --------------------------------------------------------------------------------------------

def _block_graph_item(item: PropagationItem, block: int = 2) -> PropagationItem:
    """A superpixel-like graph of ``item``: ``block x block`` squares of grid cells are the
    nodes (mean features), joined to the 8 neighbouring squares and themselves."""
    h, w = item.grid_shape
    rows, cols = -(-h // block), -(-w // block)
    cell_rows = torch.arange(h).view(h, 1) // block
    cell_cols = torch.arange(w).view(1, w) // block
    cell_node = (cell_rows * cols + cell_cols).reshape(-1)
    num_nodes = rows * cols
    counts = torch.bincount(cell_node, minlength=num_nodes).unsqueeze(1).float()
    x = torch.zeros(num_nodes, item.graph.x.shape[1]).index_add_(0, cell_node, item.graph.x)
    x = x / counts
    node_rows, node_cols = torch.arange(num_nodes) // cols, torch.arange(num_nodes) % cols
    near = (((node_rows.view(-1, 1) - node_rows.view(1, -1)).abs() <= 1)
            & ((node_cols.view(-1, 1) - node_cols.view(1, -1)).abs() <= 1))
    source, target = near.nonzero(as_tuple=True)
    generator = torch.Generator().manual_seed(num_nodes)
    edge_weight = torch.where(source == target, torch.ones(source.shape),
                              0.1 + 0.9 * torch.rand(source.shape, generator=generator))
    seeds = item.graph.y.view(h, w)
    y = torch.full((num_nodes,), 255, dtype=torch.long)
    y[cell_node.view(h, w)[seeds != 255]] = seeds[seeds != 255]
    graph = Data(x=x, edge_index=torch.stack([source, target]), edge_attr=edge_weight, y=y,
                 cell_node=cell_node)
    graph.grid_shape = (h, w)
    return dataclasses.replace(item, graph=graph)


def _without_grid_form(item: PropagationItem, cell_node: bool = False) -> PropagationItem:
    """The same graph as a plain edge list (like a kNN graph), optionally with an identity
    ``cell_node``."""
    graph = item.graph
    plain = Data(x=graph.x, edge_index=graph.edge_index, edge_attr=graph.edge_attr, y=graph.y)
    plain.grid_shape = graph.grid_shape
    if cell_node:
        plain.cell_node = torch.arange(graph.num_nodes)
    return dataclasses.replace(item, graph=plain)


def test_superpixel_like_graph_trains_and_predicts_per_node():
    items = [_block_graph_item(item) for item in ITEMS]
    fit = dataclasses.replace(SETTINGS, epochs_first=150, epochs_second=0, multi_point=False,
                              consistency=False)
    probs = train_propagator(items, fit, NUM_CLASSES, torch.device("cpu"))
    for item, p in zip(items, probs):
        h, w = item.grid_shape
        assert p.shape == (NUM_CLASSES, h, w)
        torch.testing.assert_close(p.sum(0), torch.ones(h, w))
        # Each 2 x 2 block of cells is one node: one prediction per block.
        blocks = p[:, : h // 2 * 2, : w // 2 * 2].reshape(NUM_CLASSES, h // 2, 2, w // 2, 2)
        # Equal up to float rounding: multi-threaded softmax kernels may differ in the last bits.
        torch.testing.assert_close(blocks, blocks[:, :, :1, :, :1].expand_as(blocks),
                                   rtol=0, atol=1e-7)
        seeds = item.cell_seeds()
        known = seeds != 255
        assert (p.argmax(0)[known] == seeds[known]).float().mean() > 0.9
    # With every loss on, batched equals alone for these graphs too.
    batched = train_propagator(items, SETTINGS, NUM_CLASSES, torch.device("cpu"))
    alone = train_propagator(items[1:2], SETTINGS, NUM_CLASSES, torch.device("cpu"))[0]
    torch.testing.assert_close(batched[1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["a2gnn", "gcn"])
def test_identity_cell_node_changes_nothing(name):
    settings = dataclasses.replace(SETTINGS, name=name, epochs_first=4, epochs_second=2)
    plain = train_propagator([_without_grid_form(item) for item in ITEMS], settings,
                             NUM_CLASSES, torch.device("cpu"), seed=1)
    mapped = train_propagator([_without_grid_form(item, cell_node=True) for item in ITEMS],
                              settings, NUM_CLASSES, torch.device("cpu"), seed=1)
    for a, b in zip(plain, mapped):
        assert torch.equal(a, b)


def test_grid_layout_falls_back_to_edges_for_graphs_without_grid_form(caplog):
    items = [_without_grid_form(item) for item in ITEMS]
    batched = stack_graphs(items, "grid", torch.device("cpu"))
    assert batched.layout == "edges" and "x" in batched.inputs and "edge_index" in batched.inputs
    mixed = stack_graphs([ITEMS[0], _block_graph_item(ITEMS[1])], "grid", torch.device("cpu"))
    assert mixed.layout == "edges"
    assert stack_graphs(ITEMS, "grid", torch.device("cpu")).layout == "grid"
    with caplog.at_level(logging.INFO, logger="graphwsss"):
        settings = dataclasses.replace(SETTINGS, layout="grid", epochs_first=3, epochs_second=0)
        fallback = train_propagator(items, settings, NUM_CLASSES, torch.device("cpu"))
    assert "using layout 'edges'" in caplog.text
    edges = train_propagator(items, dataclasses.replace(settings, layout="edges"), NUM_CLASSES,
                             torch.device("cpu"))
    for a, b in zip(fallback, edges):
        assert torch.equal(a, b)


def test_crop_gathers_node_rows_with_gradients():
    item = _block_graph_item(ITEMS[2])
    batched = stack_graphs([ITEMS[0], item], "edges", torch.device("cpu"))
    num_nodes = batched.inputs["x"].shape[1]
    values = torch.randn(2, num_nodes, 3, requires_grad=True)
    grid = batched.crop(values, 1)
    h, w = item.grid_shape
    assert grid.shape == (3, h, w)
    cell_node = item.graph.cell_node.view(h, w)
    assert torch.equal(grid[:, 3, 1], values[1, cell_node[3, 1]])
    grid.sum().backward()
    # Every node's gradient counts its cells; padding rows get none.
    counts = torch.bincount(item.graph.cell_node, minlength=item.graph.num_nodes).float()
    torch.testing.assert_close(values.grad[1, :item.graph.num_nodes],
                               counts.unsqueeze(1).expand(-1, 3))
    assert values.grad[1, item.graph.num_nodes:].abs().sum() == 0
    assert values.grad[0].abs().sum() == 0


# --------------------------------------------------------------------------------------------
# propagator.name = random_walk
# --------------------------------------------------------------------------------------------

def test_box_allowed_classes():
    boxes = torch.tensor([[1, 0, 3, 2], [2, 1, 4, 3]])
    allowed = box_allowed_classes(boxes, torch.tensor([1, 2]), 4, (3, 5))
    assert allowed.shape == (4, 3, 5) and allowed[0].all() and not allowed[3].any()
    assert allowed[1].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    assert allowed[2].nonzero().tolist() == [[1, 2], [1, 3], [2, 2], [2, 3]]


def test_random_walk_propagator_walks_the_seeds():
    settings = dataclasses.replace(SETTINGS, name="random_walk", rw_beta=4.0, rw_log_steps=3)
    items = ITEMS + [_block_graph_item(ITEMS[0])]
    probs = train_propagator(items, settings, NUM_CLASSES, torch.device("cpu"))
    for item, p in zip(items, probs):
        h, w = item.grid_shape
        assert p.shape == (NUM_CLASSES, h, w)
        torch.testing.assert_close(p.sum(0), torch.ones(h, w))
        assert (p.argmax(0)[0] == 0).all()  # the seeded background row
        # Initial scores: one-hot seeds; unknown cells uniform over background and the
        # classes of the boxes covering them (a class absent from every box starts at 0).
        allowed = box_allowed_classes(item.boxes, item.box_classes, NUM_CLASSES, item.grid_shape)
        initial = seed_label_probabilities(item.cell_seeds(), NUM_CLASSES, allowed)
        expected = random_walk_probabilities(item.graph, initial, beta=4.0, log_steps=3)
        torch.testing.assert_close(p, expected)
    absent = ({1, 2} - set(ITEMS[0].box_classes.tolist())).pop()
    assert probs[0][absent].max() < 1e-6


def test_output_walk_makes_each_region_agree_and_stops_at_its_edge():
    item = ITEMS[0]                                  # a 6 x 8 node grid
    features = torch.zeros(12, 6, 8)
    features[0, :, :4] = 1.0                         # two regions: left and right half
    features[1, :, 4:] = 1.0
    graph = build_graph_builder("backbone", radius=2, calibrate=True).build(item.image, features)
    item = dataclasses.replace(item, graph=graph)
    probs = torch.full((NUM_CLASSES, 6, 8), 0.1)
    probs[1, :, :4] = probs[2, :, 4:] = 0.8          # left: class 1, right: class 2 ...
    probs[:, 2, 1] = torch.tensor([0.1, 0.3, 0.6])   # ... but one left node says class 2
    walking = dataclasses.replace(SETTINGS, output_walk=True, output_walk_log_steps=3)
    walked = walk_output(item, probs, walking)
    torch.testing.assert_close(walked.sum(0), torch.ones(6, 8))
    assert (walked.argmax(0)[:, :4] == 1).all() and (walked.argmax(0)[:, 4:] == 2).all()
    # Nothing crosses the region edge: the right half keeps its probabilities.
    torch.testing.assert_close(walked[:, :, 4:], probs[:, :, 4:], atol=1e-4, rtol=0)
    # Off, and for propagators without a graph or whose output is already a walk: unchanged.
    for settings in (dataclasses.replace(walking, output_walk=False),
                     dataclasses.replace(walking, name="none"),
                     dataclasses.replace(walking, name="random_walk")):
        assert walk_output(item, probs, settings) is probs


def test_box_reach_keeps_a_small_object_the_full_walk_averages_away():
    """Box runs with output_walk_box_reach: a box's cells stop walking once the walk's reach
    passes that share of the box's short side, so a 2 x 2-node object survives the walk."""
    # Features that do not set the object apart: only the network's output marks it.
    features = torch.rand(12, 16, 16, generator=torch.Generator().manual_seed(0))
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(1))
    graph = build_graph_builder("backbone", radius=2, calibrate=True).build(image, features)
    boxes, classes = boxes_to_grid([Box(56, 56, 72, 72, 1), Box(0, 0, 128, 64, 2)], (128, 128),
                                   (16, 16))
    item = PropagationItem("x", graph, image, torch.full((128, 128), 255), boxes, classes, 8)
    probs = torch.full((NUM_CLASSES, 16, 16), 0.05)
    probs[0] = 0.9
    probs[:, 7:9, 7:9] = torch.tensor([0.3, 0.65, 0.05]).view(3, 1, 1)   # a 2 x 2-node object
    full = dataclasses.replace(SETTINGS, output_walk=True, output_walk_log_steps=5)
    assert (walk_output(item, probs, full)[:, 7:9, 7:9].argmax(0) == 0).all()   # washed out
    reach = dataclasses.replace(full, output_walk_box_reach=0.25)
    sigma = step_length(graph)
    steps = box_walk_steps(item, 0.25, sigma, 32)
    assert (steps[7:9, 7:9] == int((0.25 * 2 / sigma) ** 2)).all()              # the small box
    assert (steps[:7, :] == min(32, int((0.25 * 8 / sigma) ** 2))).all()        # 8 x 16 cells
    assert (steps[9:, :] == 32).all()                                            # outside boxes
    assert (walk_output(item, probs, reach)[:, 7:9, 7:9].argmax(0) == 1).all()  # kept


def test_random_walk_propagator_follows_rw_method_and_tolerance():
    item = ITEMS[0]
    allowed = box_allowed_classes(item.boxes, item.box_classes, NUM_CLASSES, item.grid_shape)
    initial = seed_label_probabilities(item.cell_seeds(), NUM_CLASSES, allowed)
    walks = {}
    for method, tolerance in [("matvec", 1e-3), ("squaring", 0.2)]:
        settings = dataclasses.replace(SETTINGS, name="random_walk", rw_beta=4.0, rw_log_steps=3,
                                       rw_method=method, rw_tolerance=tolerance)
        walks[method] = train_propagator([item], settings, NUM_CLASSES, torch.device("cpu"))[0]
        torch.testing.assert_close(walks[method], random_walk_probabilities(
            item.graph, initial, beta=4.0, log_steps=3, method=method, tolerance=tolerance))
    assert not torch.allclose(walks["matvec"], walks["squaring"])


@pytest.mark.parametrize("features", ["last", "first", "input"])
def test_background_consistency_rule_unlabels_seeds_like_the_background(features, caplog):
    """A box seed placed on background-like features is unlabeled by the background rule (from
    the second phase on), comparing H^{L+1}, H^1 or the input features X; more than the
    reference rule (3.28) does."""
    generator = torch.Generator().manual_seed(0)
    h, w = 6, 8
    features_map = torch.zeros(4, h, w)
    features_map[0] = 1.0                                  # background everywhere ...
    features_map[:, 2:5, 2:6] = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(4, 1, 1)  # ... object
    features_map += 0.05 * torch.rand(4, h, w, generator=generator)
    image = torch.rand(3, h * 8, w * 8, generator=generator)
    seeds = torch.full((h, w), 255, dtype=torch.long)
    seeds[0, :], seeds[:, 0] = 0, 0
    seeds[2:5, 2:6] = 1
    seeds[1, 1:7] = 1                                      # wrong: background-like, in the box
    box = Box(8, 8, 56, 40, 1)
    graph = build_graph_builder("backbone", radius=2).build(image, features_map, seeds)
    boxes, classes = boxes_to_grid([box], (h * 8, w * 8), (h, w))
    item = PropagationItem("x", graph, image, seeds.repeat_interleave(8, 0).repeat_interleave(
        8, 1), boxes, classes, stride=8)
    removed = {}
    for rule in ("reference", "background"):
        settings = dataclasses.replace(SETTINGS, consistency_rule=rule,
                                       consistency_features=features, epochs_first=10,
                                       epochs_second=10)
        with caplog.at_level(logging.INFO, logger="graphwsss.stages.propagate"):
            caplog.clear()
            train_propagator([item], settings, 2, torch.device("cpu"))
        line = [r.getMessage() for r in caplog.records if "consistency" in r.getMessage()][-1]
        removed[rule] = int(line.split("unlabeled ")[1].split(" of")[0])
    assert removed["background"] >= removed["reference"] + 3


def test_unknown_background_loss_covers_unknown_cells_inside_boxes_only():
    from graphwsss.stages.propagate import unknown_background_loss

    logits = torch.zeros(2, 2, 3, requires_grad=True)
    seeds = torch.tensor([[255, 1, 255], [0, 255, 255]])
    in_boxes = torch.tensor([[True, True, False], [False, True, False]])
    loss = unknown_background_loss(logits, seeds, in_boxes)      # cells (0, 0) and (1, 1)
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0)))
    loss.backward()
    assert (logits.grad[0] != 0).sum() == 2 and logits.grad[0, 0, 0] < 0
    empty = unknown_background_loss(logits, seeds, torch.zeros(2, 3, dtype=torch.bool))
    assert float(empty) == 0.0
    settings = dataclasses.replace(SETTINGS, unknown_background_weight=0.5)
    probs = train_propagator(ITEMS, settings, NUM_CLASSES, torch.device("cpu"))
    assert all(torch.allclose(p.sum(0), torch.ones(())) for p in probs)
