"""Tests for graphwsss.graphs.knn: the k-nearest-neighbour graph in feature space."""

import pytest
import torch

import graphwsss.graphs.knn as knn_module
from graphwsss.graphs import KNNGraphBuilder, build_graph_builder, cell_node_index, knn_edges

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def brute_force_knn(points, k):
    """Reference: the full N x N L1 distance matrix, k smallest per row, union of directions."""
    n = points.shape[0]
    distance = (points[:, None, :] - points[None, :, :]).abs().sum(-1)
    distance.fill_diagonal_(float("inf"))
    neighbours = distance.topk(min(k, n - 1), dim=1, largest=False).indices
    pairs = {}
    for i in range(n):
        for j in neighbours[i].tolist():
            pairs[(j, i)] = pairs[(i, j)] = float(distance[i, j])
    return pairs


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_chunked_knn_equals_brute_force(chunk_size):
    points = torch.rand(37, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    edge_index, distance = knn_edges(points, k=4, chunk_size=chunk_size)
    found = {(s, t): float(d) for (s, t), d in zip(edge_index.t().tolist(), distance)}
    expected = brute_force_knn(points, 4)
    assert set(found) == set(expected)
    for pair, value in found.items():
        assert value == pytest.approx(expected[pair], rel=1e-12)
    assert len(found) == edge_index.shape[1]  # no duplicates
    # sorted by target, then source
    key = edge_index[1] * 37 + edge_index[0]
    assert torch.all(key[1:] > key[:-1])


def test_distance_blocks_are_chunked(monkeypatch):
    shapes = []
    original = torch.cdist

    def recording_cdist(a, b, p=2.0):
        shapes.append((a.shape[0], b.shape[0]))
        return original(a, b, p=p)

    monkeypatch.setattr(knn_module.torch, "cdist", recording_cdist)
    knn_edges(torch.rand(50, 3), k=3, chunk_size=16)
    assert shapes == [(16, 50), (16, 50), (16, 50), (2, 50)]


def test_k_larger_than_the_graph_joins_everyone():
    points = torch.rand(5, 2, generator=torch.Generator().manual_seed(1))
    edge_index, _ = knn_edges(points, k=50)
    assert edge_index.shape[1] == 5 * 4
    single, distance = knn_edges(points[:1], k=3)
    assert single.shape == (2, 0) and distance.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_graph_fields_symmetry_self_loops_and_weights(device):
    h, w, channels, k = 6, 5, 8, 4
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(3, 8 * h, 8 * w, generator=generator).to(device)
    features = (torch.rand(channels, h, w, generator=generator) * 3).to(device)
    seeds = torch.randint(0, 3, (h, w), generator=generator)
    seeds[0] = 255
    data = KNNGraphBuilder(k=k).build(image, features, seeds.to(device))
    n = h * w
    assert data.grid_shape == (h, w) and data.num_nodes == n
    assert data.x.shape == (n, channels)
    torch.testing.assert_close(data.x.sum(1), torch.ones(n, device=device))
    assert torch.equal(data.y.cpu(), seeds.reshape(-1))
    assert data.pos.shape == (n, 2) and data.pos[w + 2].tolist() == [1.0, 2.0]
    assert getattr(data, "grid_weight", None) is None and getattr(data, "offsets", None) is None
    assert torch.equal(cell_node_index(data).cpu(), torch.arange(n))
    for value in (data.x, data.y, data.pos, data.edge_index, data.edge_attr):
        assert value.device.type == torch.device(device).type

    source, target = data.edge_index
    loops = source == target
    assert torch.equal(target[loops], torch.arange(n, device=device))
    assert torch.all(data.edge_attr[loops] == 1)
    forward = torch.sort(source * n + target)
    backward = torch.sort(target * n + source)
    assert torch.equal(forward.values, backward.values)
    assert torch.equal(data.edge_attr[forward.indices], data.edge_attr[backward.indices])
    # every node keeps (at least) its k nearest; weights are exp(-L1 / d)
    degree = torch.bincount(target[~loops], minlength=n)
    assert int(degree.min()) >= k
    points = features.flatten(1).t().cpu().double()
    l1 = (points[source.cpu()] - points[target.cpu()]).abs().sum(1)
    torch.testing.assert_close(data.edge_attr.cpu().double(), torch.exp(-l1 / channels),
                               rtol=1e-5, atol=1e-7)
    expected = brute_force_knn(points, k)
    found = {(s, t) for s, t in data.edge_index.t().tolist() if s != t}
    assert found == set(expected)


def test_embedding_decides_the_neighbours_and_threshold_drops_edges():
    h, w = 4, 4
    features = torch.rand(5, h, w, generator=torch.Generator().manual_seed(3))
    embedding = torch.zeros(1, h, w)
    embedding[0, :, 2:] = 100.0  # two clusters, far apart
    image = torch.rand(3, 32, 32)
    data = KNNGraphBuilder(k=3).build(image, features, embedding=embedding)
    source, target = data.edge_index
    column = data.pos[:, 1]
    assert torch.all((column[source] >= 2) == (column[target] >= 2))
    # k = 8 reaches across the clusters (exp(-100) < threshold): those edges are dropped.
    data = KNNGraphBuilder(k=8, threshold=1e-3).build(image, features, embedding=embedding)
    source, target = data.edge_index
    assert torch.all((column[source] >= 2) == (column[target] >= 2))
    assert torch.all(data.edge_attr > 1e-3)


def test_registered_and_bad_input():
    builder = build_graph_builder("knn", k=5)
    assert isinstance(builder, KNNGraphBuilder) and builder.name == "knn" and builder.k == 5
    image, features = torch.rand(3, 16, 16), torch.rand(4, 2, 2)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        KNNGraphBuilder(k=0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        KNNGraphBuilder(k=2.5)
    with pytest.raises(ValueError, match="chunk_size"):
        KNNGraphBuilder(chunk_size=0)
    with pytest.raises(ValueError, match="threshold"):
        KNNGraphBuilder(threshold=1.0)
    with pytest.raises(ValueError, match="features must be"):
        builder.build(image, features[0])
    with pytest.raises(ValueError, match="embedding must be"):
        builder.build(image, features, embedding=torch.rand(3, 3, 2))
    with pytest.raises(ValueError, match="points must be"):
        knn_edges(torch.rand(4, 2, 2), k=1)
