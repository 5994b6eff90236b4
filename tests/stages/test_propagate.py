"""Batched transductive training: batch == one at a time, grid == edge layout, losses wired."""

import dataclasses

import pytest
import torch

from graphwsss.data import Box
from graphwsss.graphs import build_graph_builder
from graphwsss.losses import boxes_to_grid
from graphwsss.settings import PropagatorSettings
from graphwsss.stages.propagate import PropagationItem, train_propagator

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
