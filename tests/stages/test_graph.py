"""Node features and graphs of a run's images (docs/method.md §4–5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graphwsss.config import load_config
from graphwsss.data.palette import write_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.graphs import available_builders
from graphwsss.settings import GraphSettings, RunSettings
from graphwsss.stages import graph


@pytest.mark.parametrize("name", ["backbone", "rgbxy", "knn", "superpixel"])
def test_every_builder_is_made_from_its_settings(name):
    assert name in available_builders()
    settings = GraphSettings(builder=name)
    builder = graph.make_builder(settings)
    assert builder.name == name
    options = graph.builder_options(settings)
    assert options.get("threshold") == settings.threshold


def test_colour_option_reaches_feature_graphs_only():
    assert graph.builder_options(GraphSettings(builder="backbone", colour=True))["colour"] == (
        6.0, 0.1)
    assert "colour" not in graph.builder_options(GraphSettings(builder="rgbxy", colour=True))
    assert "colour" not in graph.builder_options(GraphSettings(builder="backbone"))


def test_calibrate_option_reaches_feature_graphs_only():
    assert graph.builder_options(GraphSettings(builder="backbone", calibrate=True))["calibrate"]
    assert graph.make_builder(GraphSettings(builder="backbone", calibrate=True)).calibrate
    assert graph.make_builder(GraphSettings(builder="backbone")).calibrate      # the default
    assert not graph.make_builder(GraphSettings(builder="backbone", calibrate=False)).calibrate
    for name in ("rgbxy", "affinity"):    # colour kernels; an embedding trained as an affinity
        assert "calibrate" not in graph.builder_options(GraphSettings(builder=name))


def test_feature_affinity_option_reaches_the_affinity_builder_only():
    assert graph.make_builder(GraphSettings(builder="affinity", feature_affinity=True)).feature_affinity
    assert not graph.make_builder(GraphSettings(builder="affinity")).feature_affinity  # default
    for name in ("backbone", "rgbxy", "knn", "superpixel"):
        options = graph.builder_options(GraphSettings(builder=name, feature_affinity=True))
        assert "feature_affinity" not in options


def test_affinity_graphs_need_trained_weights():
    settings = load_config(RunSettings, None, ["graph.builder=affinity"])
    with pytest.raises(ValueError, match="needs a trained affinity CNN"):
        graph.node_source(settings, torch.device("cpu"))


def test_build_item_puts_seeds_features_and_boxes_on_one_grid(tmp_path, sample_root):
    dataset = VOCDataset(sample_root)
    sample = dataset.load(dataset.ids[0])
    settings = load_config(RunSettings, None, ["backbone.weights=null"])
    source = graph.node_source(settings, torch.device("cpu"))
    seeds = np.full((sample.height, sample.width), 255, np.uint8)
    seeds[:8, :8] = 0
    write_label_png(tmp_path / "seeds.png", seeds)
    item = graph.build_item(sample, tmp_path / "seeds.png", source,
                            graph.make_builder(settings.graph), torch.device("cpu"))
    grid = (math.ceil(sample.height / source.stride), math.ceil(sample.width / source.stride))
    assert item.grid_shape == grid and item.stride == source.stride == 8
    assert item.graph.num_nodes == grid[0] * grid[1]
    assert item.cell_seeds()[0, 0] == 0 and (item.cell_seeds()[2:, 2:] == 255).all()
    assert item.boxes.shape == (len(sample.boxes), 4)
    assert tuple(item.pixel_seeds.shape) == (sample.height, sample.width)
    inputs = graph.node_inputs(sample, source, torch.device("cpu"))
    assert inputs.node_seeds is None and inputs.grid_size == grid
    assert graph.typical_nodes(dataset, 8) == grid[0] * grid[1]
