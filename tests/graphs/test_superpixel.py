"""Tests for graphwsss.graphs.superpixel: the superpixel region-adjacency graph (GraphNet style)."""

import math

import numpy as np
import pytest
import torch

from graphwsss.graphs import (SuperpixelGraphBuilder, build_graph_builder, cell_centre_pixels,
                              cell_node_index, majority_cell_labels, region_adjacency,
                              superpixel_labels)
from graphwsss.seeds.grid import grid_seeds

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def two_colour_image(height=48, width=64, seed=0):
    """Red left half, blue right half, with a little noise."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.empty(3, height, width)
    image[:, :, :width // 2] = torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1)
    image[:, :, width // 2:] = torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1)
    return (image + 0.02 * torch.rand(3, height, width, generator=generator)).clamp(0, 1)


def random_features(channels, h, w, seed=1):
    return torch.rand(channels, h, w, generator=torch.Generator().manual_seed(seed))


def test_region_adjacency_of_a_small_map():
    region = torch.tensor([[0, 0, 1],
                           [2, -1, 1],
                           [2, 3, 3]])
    pairs = region_adjacency(region)
    # (0,1), (0,2), (1,3), (2,3); -1 joins nothing (1 and 2 only touch through it)
    assert pairs.tolist() == [[0, 0, 1, 2], [1, 2, 3, 3]]
    with pytest.raises(ValueError, match="region"):
        region_adjacency(region.float())


def test_cell_centre_pixels_match_the_node_seeds():
    # a 213 x 320 image at stride 8: a 27 x 40 grid whose last row is padding
    rows, cols = cell_centre_pixels(213, 320, 27, 40)
    seeds = np.arange(213 * 320).reshape(213, 320)
    centres = grid_seeds(seeds, (27, 40), stride=8)
    assert np.array_equal(seeds[np.ix_(rows.numpy(), cols.numpy())], centres)
    assert rows[-1] == 212 and cols.tolist()[:2] == [4, 12]
    with pytest.raises(ValueError, match="non-empty"):
        cell_centre_pixels(10, 10, 0, 2)


def test_majority_cell_labels_unanimous_fraction_and_void():
    cell_node = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    labels = torch.tensor([2, 2, 255, 255,   # node 0: seeds agree on 2 (half of its cells)
                           1, 3, 3,          # node 1: 1 and 3 disagree
                           255, 255,         # node 2: no seed
                           4, 255, 255])     # node 3: one seed of three cells
    assert majority_cell_labels(labels, cell_node, 5).tolist() == [2, 3, 255, 4, 255]
    assert majority_cell_labels(labels, cell_node, 5, unanimous=True).tolist() == [
        2, 255, 255, 4, 255]
    assert majority_cell_labels(labels, cell_node, 5, unanimous=True,
                                min_fraction=0.5).tolist() == [2, 255, 255, 255, 255]
    tie = majority_cell_labels(torch.tensor([5, 1]), torch.tensor([0, 0]), 1)
    assert tie.tolist() == [1]  # ties go to the smaller label
    with pytest.raises(ValueError, match="cell_labels must lie"):
        majority_cell_labels(torch.tensor([-1, 1]), torch.tensor([0, 0]), 1)
    with pytest.raises(ValueError, match="cell_node must lie"):
        majority_cell_labels(torch.tensor([1, 1]), torch.tensor([0, 3]), 2)
    with pytest.raises(ValueError, match="one entry per cell"):
        majority_cell_labels(torch.tensor([1, 1, 1]), torch.tensor([0, 0]), 1)


@pytest.mark.parametrize("method", ["slic", "felzenszwalb"])
def test_superpixel_labels_are_dense_and_follow_colour(method):
    image = two_colour_image()
    labels = superpixel_labels(image, method, segments=12, scale=50, min_size=20)
    assert labels.shape == (48, 64) and labels.dtype == torch.long
    assert torch.equal(torch.unique(labels), torch.arange(int(labels.max()) + 1))
    # No superpixel straddles the colour boundary.
    left, right = set(labels[:, :32].unique().tolist()), set(labels[:, 32:].unique().tolist())
    assert not left & right
    with pytest.raises(ValueError, match="method"):
        superpixel_labels(image, "watershed")


@pytest.mark.parametrize("device", DEVICES)
def test_graph_fields_and_structure(device):
    image, h, w, channels = two_colour_image().to(device), 6, 8, 5
    features = random_features(channels, h, w).to(device)
    builder = SuperpixelGraphBuilder(segments=12)
    data = builder.build(image, features)
    n = data.num_nodes
    assert data.grid_shape == (h, w)
    assert data.x.shape == (n, channels) and data.y.shape == (n,) and data.pos.shape == (n, 2)
    assert torch.all(data.y == 255)
    assert not hasattr(data, "grid_weight") or data.grid_weight is None
    for value in (data.x, data.y, data.pos, data.edge_index, data.edge_attr, data.cell_node):
        assert value.device.type == torch.device(device).type
    torch.testing.assert_close(data.x.sum(1), torch.ones(n, device=device))

    # cell_node: the superpixel under each cell centre, renumbered; every node owns a cell.
    cell_node = cell_node_index(data)
    assert cell_node.shape == (h * w,) and cell_node.dtype == torch.long
    assert torch.equal(torch.unique(cell_node), torch.arange(n, device=device))
    segments = superpixel_labels(image.cpu(), "slic", 12)
    rows, cols = cell_centre_pixels(48, 64, h, w)
    centre_segment = segments[rows][:, cols].reshape(-1)
    for a in range(h * w):
        for b in range(h * w):
            same_segment = bool(centre_segment[a] == centre_segment[b])
            assert same_segment == bool(cell_node[a] == cell_node[b])

    # x and pos are means over each node's cells.
    flat = features.flatten(1).t().cpu()
    grid = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1)
    for node in range(n):
        cells = (cell_node == node).cpu()
        mean = flat[cells].mean(0)
        torch.testing.assert_close(data.x[node].cpu(), mean / mean.sum())
        torch.testing.assert_close(data.pos[node].cpu(), grid.reshape(-1, 2)[cells].float().mean(0))

    # Self loops of weight 1, both directions with equal weight, weights in (threshold, 1].
    source, target = data.edge_index
    loops = source == target
    assert torch.equal(target[loops], torch.arange(n, device=device))
    assert torch.all(data.edge_attr[loops] == 1)
    assert torch.all(data.edge_attr > builder.threshold) and torch.all(data.edge_attr <= 1)
    forward = torch.sort(source * n + target)
    backward = torch.sort(target * n + source)
    assert torch.equal(forward.values, backward.values)
    assert torch.equal(data.edge_attr[forward.indices], data.edge_attr[backward.indices])
    # Red and blue superpixels are adjacent but their colour weight is below the threshold.
    side = (data.pos[:, 1] >= w / 2).long()
    assert torch.all(side[source] == side[target])
    assert int((~loops).sum()) > 0


def test_edges_are_the_adjacent_superpixels_with_colour_weights():
    image = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(3)) * 0.3 + 0.3
    h, w = 5, 7
    builder = SuperpixelGraphBuilder(segments=20, sigma_rgb=0.2, threshold=0.0)
    data = builder.build(image, random_features(4, h, w))
    cell_node = data.cell_node
    segments = superpixel_labels(image, "slic", 20)
    rows, cols = cell_centre_pixels(40, 56, h, w)
    node_of_segment = {int(s): int(cell_node[i]) for i, s in
                       enumerate(segments[rows][:, cols].reshape(-1))}
    expected = set()
    colour_sum, colour_count = {}, {}
    for y in range(40):  # reference: pixel by pixel
        for x in range(56):
            node = node_of_segment.get(int(segments[y, x]))
            if node is None:
                continue
            colour_sum[node] = colour_sum.get(node, 0) + image[:, y, x].double()
            colour_count[node] = colour_count.get(node, 0) + 1
            for ny, nx in ((y + 1, x), (y, x + 1)):
                if ny < 40 and nx < 56:
                    other = node_of_segment.get(int(segments[ny, nx]))
                    if other is not None and other != node:
                        expected |= {(node, other), (other, node)}
    for y in range(h):  # ... and cell by cell
        for x in range(w):
            for ny, nx in ((y + 1, x), (y, x + 1)):
                if ny < h and nx < w:
                    a, b = int(cell_node[y * w + x]), int(cell_node[ny * w + nx])
                    if a != b:
                        expected |= {(a, b), (b, a)}
    source, target = data.edge_index.tolist()
    found = {(s, t): float(e) for s, t, e in zip(source, target, data.edge_attr) if s != t}
    assert set(found) == expected
    for (a, b), weight in found.items():
        colour_a = colour_sum[a] / colour_count[a]
        colour_b = colour_sum[b] / colour_count[b]
        reference = math.exp(-float(((colour_a - colour_b) ** 2).sum()) / (2 * 0.2**2))
        assert weight == pytest.approx(reference, rel=1e-4)


def test_feature_edge_weight_uses_the_embedding_region_means():
    image, h, w = two_colour_image(), 6, 8
    features = random_features(5, h, w)
    embedding = random_features(3, h, w, seed=7) * 4
    data = SuperpixelGraphBuilder(segments=12, edge_weight="feature", threshold=0.0).build(
        image, features, embedding=embedding)
    flat = embedding.flatten(1).t()
    means = torch.stack([flat[data.cell_node == node].mean(0) for node in range(data.num_nodes)])
    source, target = data.edge_index
    reference = torch.exp(-(means[source] - means[target]).abs().sum(1) / 3)
    torch.testing.assert_close(data.edge_attr, reference)


def test_colour_features_are_appended():
    image, h, w = two_colour_image(), 6, 8
    data = SuperpixelGraphBuilder(segments=12, colour_features=True).build(
        image, random_features(5, h, w))
    assert data.x.shape[1] == 8
    red = data.pos[:, 1] < w / 2
    assert torch.all(data.x[red, 5] > 0.28) and torch.all(data.x[~red, 7] > 0.28)  # ~0.9 / 3


def test_seed_majority_per_node():
    image, h, w = two_colour_image(), 6, 8
    seeds = torch.full((h, w), 255, dtype=torch.long)
    seeds[:, :4] = 1               # the red half: all seeded 1
    seeds[:, 4:] = 2               # the blue half: 2 ...
    seeds[0, 7] = 3                # ... except one cell saying 3
    data = SuperpixelGraphBuilder(segments=12).build(image, random_features(5, h, w), seeds)
    cell_node = data.cell_node
    reference = majority_cell_labels(seeds, cell_node, data.num_nodes, unanimous=True,
                                     min_fraction=0.5)
    assert torch.equal(data.y, reference)
    red = data.pos[:, 1] < w / 2
    assert torch.all(data.y[red] == 1)
    conflicted = cell_node[7]                  # the node holding the cell that says 3
    assert data.y[conflicted] == 255
    others = (~red) & (torch.arange(data.num_nodes) != conflicted)
    assert torch.all(data.y[others] == 2)


def test_registered_and_felzenszwalb_runs():
    builder = build_graph_builder("superpixel", method="felzenszwalb", scale=50, min_size=20)
    assert isinstance(builder, SuperpixelGraphBuilder) and builder.name == "superpixel"
    data = builder.build(two_colour_image(), random_features(5, 6, 8))
    assert data.num_nodes >= 2
    assert torch.equal(torch.unique(data.cell_node), torch.arange(data.num_nodes))


def test_bad_input_and_options():
    image, features = two_colour_image(), random_features(5, 6, 8)
    builder = SuperpixelGraphBuilder(segments=12)
    with pytest.raises(ValueError, match="image must be"):
        builder.build(image[:2], features)
    with pytest.raises(ValueError, match="features must be"):
        builder.build(image, features[0])
    with pytest.raises(ValueError, match="seed_labels must be"):
        builder.build(image, features, torch.zeros(5, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="seed_labels must be an integer"):
        builder.build(image, features, torch.zeros(6, 8))
    with pytest.raises(ValueError, match="method"):
        SuperpixelGraphBuilder(method="quickshift")
    with pytest.raises(ValueError, match="segments"):
        SuperpixelGraphBuilder(segments=0)
    with pytest.raises(ValueError, match="edge_weight"):
        SuperpixelGraphBuilder(edge_weight="xy")
    with pytest.raises(ValueError, match="threshold"):
        SuperpixelGraphBuilder(threshold=1.0)
    with pytest.raises(ValueError, match="min_seed_fraction"):
        SuperpixelGraphBuilder(min_seed_fraction=2)
