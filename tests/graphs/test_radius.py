"""Tests for graphwsss.graphs.radius: affinity (3.8), thresholded radius graph (3.14), builders."""

import math

import pytest
import torch

from graphwsss.graphs import (AffinityGraphBuilder, RadiusGraphBuilder, affinity_from_embedding,
                              available_builders, build_graph_builder, calibrated_affinity,
                              edges_to_grid, embedding_distance, neighbor_valid, radius_offsets,
                              threshold_edges)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_inputs(h, w, channels, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 8 * h - 3, 8 * w - 5, generator=generator)
    features = torch.rand(channels, h, w, generator=generator)
    return image.to(device), features.to(device)


def test_affinity_matches_per_edge_loops():
    h, w, depth = 5, 4, 6
    generator = torch.Generator().manual_seed(0)
    embedding = torch.rand(depth, h, w, generator=generator, dtype=torch.float64) * 3
    offsets = radius_offsets(2, "square")
    affinity = affinity_from_embedding(embedding, offsets)
    assert affinity.shape == (offsets.shape[0], h, w)
    for o, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(h):
            for x in range(w):
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    l1 = sum(abs(float(embedding[c, y, x] - embedding[c, y + dy, x + dx]))
                             for c in range(depth))
                    expected = math.exp(-l1 / depth)
                else:
                    expected = 0.0
                assert float(affinity[o, y, x]) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_affinity_batched_normalizer_and_gradient():
    generator = torch.Generator().manual_seed(1)
    embedding = torch.rand(2, 8, 6, 5, generator=generator, dtype=torch.float64)
    offsets = radius_offsets(2)
    batched = affinity_from_embedding(embedding, offsets)
    assert batched.shape == (2, offsets.shape[0], 6, 5)
    for b in range(2):
        assert torch.allclose(batched[b], affinity_from_embedding(embedding[b], offsets))
    distance = embedding_distance(embedding, offsets, normalizer=2.0)
    assert torch.allclose(distance * 2.0 / 8, embedding_distance(embedding, offsets))
    leaf = embedding[0, :, :4, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda e: affinity_from_embedding(e, offsets), (leaf,))


def check_graph(data, h, w, channels, device):
    n = h * w
    assert data.grid_shape == (h, w)
    assert data.x.shape == (n, channels)
    assert data.y.shape == (n,) and data.y.dtype == torch.long
    assert data.pos.shape == (n, 2) and data.pos.is_floating_point()
    assert data.pos[w + 2].tolist() == [1.0, 2.0]
    assert data.edge_index.shape[0] == 2 and data.edge_index.dtype == torch.long
    assert data.edge_attr.shape == (data.edge_index.shape[1],)
    assert data.edge_attr.is_floating_point()
    for value in (data.x, data.y, data.pos, data.edge_index, data.edge_attr, data.offsets,
                  data.grid_weight):
        assert value.device.type == torch.device(device).type
    torch.testing.assert_close(data.x.sum(1), torch.ones(n, device=device, dtype=data.x.dtype))
    # self loops: one per node, weight 1
    source, target = data.edge_index
    loops = source == target
    assert int(loops.sum()) == n
    assert torch.equal(target[loops], torch.arange(n, device=device))
    assert torch.all(data.edge_attr[loops] == 1)
    assert torch.all(data.edge_attr > 0) and torch.all(data.edge_attr <= 1)
    # both directions with the same weight
    forward = torch.sort(source * n + target)
    backward = torch.sort(target * n + source)
    assert torch.equal(forward.values, backward.values)
    assert torch.equal(data.edge_attr[forward.indices], data.edge_attr[backward.indices])
    # the grid form holds the same edges
    assert torch.equal(edges_to_grid(data.edge_index, data.edge_attr, data.offsets, h, w),
                       data.grid_weight)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape, full_count", [("disc", 136397), ("square", 220441)])
def test_backbone_builder_voc_size(device, shape, full_count):
    h, w, channels = 63, 47, 64
    image, features = random_inputs(h, w, channels, device)
    builder = build_graph_builder("backbone", radius=4, shape=shape)
    assert isinstance(builder, RadiusGraphBuilder) and builder.name == "backbone"
    data = builder.build(image, features)
    check_graph(data, h, w, channels, device)
    # features in [0, 1]: every in-window pair has D > 1e-3, so all of them are edges
    assert data.edge_index.shape[1] == full_count
    assert torch.all(data.y == 255)
    # edge weights are D(j, i) computed from the features directly
    source, target = data.edge_index
    flat = features.flatten(1)
    expected = torch.exp(-(flat[:, source] - flat[:, target]).abs().sum(0) / channels)
    torch.testing.assert_close(data.edge_attr, expected)


def test_threshold_removes_edges_between_distant_embeddings():
    h, w = 6, 7
    embedding = torch.zeros(4, h, w)
    embedding[:, :, 4:] = 10.0          # D across the split = exp(-10) < 1e-3
    _, features = random_inputs(h, w, 5)
    offsets = radius_offsets(2)
    valid = neighbor_valid(h, w, offsets)
    col = torch.arange(w).view(1, 1, w)
    same_side = (col < 4) == ((col + offsets[:, 1].view(-1, 1, 1)) < 4)

    data = RadiusGraphBuilder(radius=2).build(torch.rand(3, 48, 56), features, embedding=embedding)
    assert data.edge_index.shape[1] == int((valid & same_side).sum())
    assert torch.all((data.edge_index[0] % w < 4) == (data.edge_index[1] % w < 4))
    assert torch.all(data.edge_attr == 1)

    # with a threshold below exp(-10) the crossing edges come back with their weight
    data = RadiusGraphBuilder(radius=2, threshold=1e-5).build(torch.rand(3, 48, 56), features,
                                                              embedding=embedding)
    assert data.edge_index.shape[1] == int(valid.sum())
    crossing = (data.edge_index[0] % w < 4) != (data.edge_index[1] % w < 4)
    torch.testing.assert_close(data.edge_attr[crossing],
                               torch.full((int(crossing.sum()),), math.exp(-10.0)))


def test_embedding_is_used_when_given_and_features_otherwise():
    h, w = 5, 6
    image, features = random_inputs(h, w, 3)
    embedding = torch.rand(7, h, w)
    builder = RadiusGraphBuilder(radius=2)
    offsets = radius_offsets(2)
    with_embedding = builder.build(image, features, embedding=embedding)
    without = builder.build(image, features)
    assert torch.allclose(with_embedding.grid_weight, affinity_from_embedding(embedding, offsets))
    assert torch.allclose(without.grid_weight, affinity_from_embedding(features, offsets))
    assert torch.equal(with_embedding.x, without.x)


def test_affinity_builder_requires_embedding():
    image, features = random_inputs(4, 4, 3)
    builder = build_graph_builder("affinity", radius=3)
    assert isinstance(builder, AffinityGraphBuilder) and builder.name == "affinity"
    with pytest.raises(ValueError, match="embedding"):
        builder.build(image, features)
    data = builder.build(image, features, embedding=torch.rand(448, 4, 4))
    assert data.x.shape == (16, 3)


def test_seeds_and_zero_feature_rows():
    h, w = 4, 5
    image, features = random_inputs(h, w, 3)
    features[:, 1, 2] = 0.0
    seeds = torch.full((h, w), 255, dtype=torch.long)
    seeds[0, 0], seeds[3, 4] = 0, 7
    data = RadiusGraphBuilder(radius=1).build(image, features, seed_labels=seeds)
    assert torch.equal(data.y, seeds.flatten())
    assert torch.all(data.x[1 * w + 2] == 0) and torch.isfinite(data.x).all()
    torch.testing.assert_close(data.x[0], features[:, 0, 0] / features[:, 0, 0].sum())


def test_input_validation_and_registry():
    image, features = random_inputs(4, 4, 3)
    builder = RadiusGraphBuilder()
    with pytest.raises(ValueError, match="seed_labels"):
        builder.build(image, features, seed_labels=torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="embedding"):
        builder.build(image, features, embedding=torch.rand(8, 3, 4))
    with pytest.raises(ValueError, match="features"):
        builder.build(image, features[0])
    with pytest.raises(ValueError, match="radius"):
        RadiusGraphBuilder(radius=0)
    with pytest.raises(ValueError, match="unknown graph builder") as error:
        build_graph_builder("nope")
    assert all(name in str(error.value) for name in ("affinity", "backbone", "rgbxy"))
    assert {"backbone", "affinity", "rgbxy"} <= set(available_builders())


def test_calibrated_affinity_is_one_within_regions_and_small_across():
    # two flat regions with feature noise: adjacent pairs within a region are at most the
    # typical adjacent distance (D = 1 or close), pairs across the split far beyond it
    generator = torch.Generator().manual_seed(0)
    h, w = 12, 14
    embedding = torch.rand(8, h, w, generator=generator)
    embedding[:, :, 7:] += 3.0
    offsets = radius_offsets(3)
    valid = neighbor_valid(h, w, offsets)
    calibrated = calibrated_affinity(embedding_distance(embedding, offsets), offsets, valid)
    raw = affinity_from_embedding(embedding, offsets)
    col = torch.arange(w).view(1, 1, w)
    same = valid & (((col < 7) == ((col + offsets[:, 1].view(-1, 1, 1)) < 7)))
    across = valid & ~same
    assert calibrated[~valid].eq(0).all() and calibrated[valid].le(1).all()
    assert calibrated[same].mean() > 0.9 > raw[same].mean()
    assert calibrated[across].max() < 0.2
    # a half of the adjacent pairs lie at or below the floor: D = 1 exactly
    adjacent = (offsets.abs().sum(1) == 1).view(-1, 1, 1) & valid
    assert calibrated[adjacent].eq(1).float().mean() >= 0.5
    # scale-free: the same image with every feature doubled gives the same graph
    doubled = calibrated_affinity(embedding_distance(2 * embedding, offsets), offsets, valid)
    torch.testing.assert_close(doubled, calibrated)


def test_feature_affinity_multiplies_the_learned_affinity_by_the_features_one():
    h, w = 6, 7
    image, features = random_inputs(h, w, 5)
    embedding = torch.rand(4, h, w)
    offsets = radius_offsets(2)
    learned = AffinityGraphBuilder(radius=2, threshold=0.0).build(image, features,
                                                                   embedding=embedding)
    both = AffinityGraphBuilder(radius=2, threshold=0.0, feature_affinity=True).build(
        image, features, embedding=embedding)
    from_features = calibrated_affinity(embedding_distance(features, offsets), offsets,
                                        neighbor_valid(h, w, offsets))
    expected = affinity_from_embedding(embedding, offsets) * from_features
    torch.testing.assert_close(both.grid_weight, threshold_edges(expected, offsets, 0.0))
    assert both.grid_weight.sum() < learned.grid_weight.sum()     # a product of two sources ≤ 1
    # features that cannot tell the nodes apart leave the learned graph as it was
    flat = AffinityGraphBuilder(radius=2, threshold=0.0, feature_affinity=True).build(
        image, torch.ones(5, h, w), embedding=embedding)
    torch.testing.assert_close(flat.grid_weight, learned.grid_weight)


def test_calibrate_option_of_the_builder():
    h, w = 6, 7
    image, features = random_inputs(h, w, 5)
    offsets = radius_offsets(2)
    data = RadiusGraphBuilder(radius=2, calibrate=True).build(image, features)
    expected = calibrated_affinity(embedding_distance(features, offsets), offsets,
                                   neighbor_valid(h, w, offsets))
    torch.testing.assert_close(data.grid_weight, threshold_edges(expected, offsets, 1e-3))
    # a 1 x 1 grid has only its self loop
    single = RadiusGraphBuilder(radius=2, calibrate=True).build(torch.rand(3, 8, 8),
                                                                torch.rand(5, 1, 1))
    assert single.edge_index.shape[1] == 1 and single.edge_attr.item() == 1
