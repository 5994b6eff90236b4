import math

import pytest
import torch

from graphwsss.graphs.grid import grid_to_edges, neighbor_valid, radius_offsets
from graphwsss.nn.affinity_attention import (AffinityAttentionConv, CsrAdjacency, TiledWindow,
                                             edge_aggregate, edge_attention,
                                             grid_affinity_attention, grid_tiles,
                                             tiled_affinity_attention)


def random_grid_graph(batch, height, width, offsets, seed=0, keep=0.7, dtype=torch.float64,
                      device="cpu"):
    """Random edge weights in (0.05, 1] with random missing edges; self loops weight 1."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, offsets.shape[0], height, width)
    weight = 0.05 + 0.95 * torch.rand(shape, generator=generator, dtype=dtype)
    weight = weight * (torch.rand(shape, generator=generator) < keep)
    weight[:, 0] = 1.0  # offsets[0] is (0, 0)
    return (weight * neighbor_valid(height, width, offsets)).to(device)


def naive_attention(x, edge_index, edge_weight, w, beta, form):
    """The rule (3.17-3.18) written edge by edge with gathers: the oracle."""
    source, target = edge_index
    unit = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = (unit[source] * unit[target]).sum(1)
    logits = w * cos + beta * (cos > 0) * edge_weight
    keep = (cos > 0) if form == "reference" else torch.ones_like(cos, dtype=torch.bool)
    scores = torch.where(keep, torch.exp(logits), torch.zeros_like(logits))
    total = torch.zeros(x.shape[0], dtype=x.dtype).index_add(0, target, scores)
    p = scores / total[target].clamp_min(1e-300)
    return torch.zeros_like(x).index_add(0, target, p.unsqueeze(1) * x[source]), p


def random_graph(num_nodes, num_edges, seed=0, dtype=torch.float64):
    """A random directed graph (not symmetric), no duplicate edges, self loops on all nodes."""
    generator = torch.Generator().manual_seed(seed)
    pairs = torch.randperm(num_nodes * num_nodes, generator=generator)[:num_edges]
    edge_index = torch.stack([pairs % num_nodes, pairs // num_nodes])
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    loops = torch.arange(num_nodes).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], 1)
    edge_weight = torch.rand(edge_index.shape[1], generator=generator, dtype=dtype)
    return edge_index, edge_weight


def grid_and_edge_paths(batch, height, width, channels, offsets, form, device="cpu",
                        dtype=torch.float64):
    """Run both implementations on the same random graphs; return (values, grads) of each."""
    generator = torch.Generator().manual_seed(1)
    grid_weight = random_grid_graph(batch, height, width, offsets, dtype=dtype, device=device)
    h = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype).to(device)
    h.requires_grad_(True)
    w = torch.rand(batch, generator=generator, dtype=dtype).to(device).requires_grad_(True)
    upstream = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype).to(device)
    out = grid_affinity_attention(h, grid_weight, offsets.to(device), w, 10.0, form)
    grad_h, grad_w = torch.autograd.grad((out * upstream).sum(), [h, w])

    conv = AffinityAttentionConv(form=form).to(device=device, dtype=dtype)
    edge_out, edge_grad_h, edge_grad_w = [], [], []
    for index in range(batch):
        edge_index, edge_weight = grid_to_edges(grid_weight[index], offsets.to(device))
        x = h[index].detach().flatten(1).t().clone().requires_grad_(True)
        with torch.no_grad():
            conv.weight.copy_(w[index].detach().reshape(1))
        conv.weight.grad = None
        result = conv(x, edge_index, edge_weight)
        (result * upstream[index].flatten(1).t()).sum().backward()
        edge_out.append(result.detach().t().reshape(channels, height, width))
        edge_grad_h.append(x.grad.t().reshape(channels, height, width))
        edge_grad_w.append(conv.weight.grad.reshape(()))
    return ((out.detach(), grad_h, grad_w),
            (torch.stack(edge_out), torch.stack(edge_grad_h), torch.stack(edge_grad_w)))


@pytest.mark.parametrize("form", ["reference", "paper"])
@pytest.mark.parametrize("shape", ["disc", "square"])
def test_grid_path_equals_edge_path(form, shape):
    offsets = radius_offsets(2, shape)
    (out, grad_h, grad_w), (edge_out, edge_grad_h, edge_grad_w) = grid_and_edge_paths(
        2, 7, 9, 6, offsets, form)
    assert out.abs().sum() > 0 and grad_w.abs().min() > 0
    torch.testing.assert_close(out, edge_out, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_h, edge_grad_h, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(grad_w, edge_grad_w, rtol=1e-9, atol=1e-10)


def test_grid_path_equals_edge_path_float32_asymmetric_window():
    # Half a window: no edge j -> i has its reverse i -> j.
    offsets = radius_offsets(2, "square")
    offsets = offsets[(offsets[:, 0] > 0) | ((offsets[:, 0] == 0) & (offsets[:, 1] >= 0))]
    (out, grad_h, grad_w), (edge_out, edge_grad_h, edge_grad_w) = grid_and_edge_paths(
        2, 6, 5, 8, offsets, "reference", dtype=torch.float32)
    torch.testing.assert_close(out, edge_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_h, edge_grad_h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w, edge_grad_w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("tile", [1, 4, 16])
def test_grid_path_does_not_depend_on_tile_size(tile):
    # Grids that are not whole tiles, smaller than a tile, tiles smaller than the radius.
    offsets = radius_offsets(3, "disc")
    grid_weight = random_grid_graph(2, 13, 6, offsets, seed=8)
    h = torch.randn(2, 13, 6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
    results = []
    for size in (8, tile):
        out = tiled_affinity_attention(h, grid_tiles(grid_weight, offsets, tile=size), w)
        results.append((out, *torch.autograd.grad(out.square().sum(), [h, w])))
    for first, second in zip(*results):
        torch.testing.assert_close(first, second)


def test_fold_is_the_adjoint_of_neighbourhoods_and_tiles_round_trip():
    window = TiledWindow(radius_offsets(2, "square"), tile=4)
    a = torch.randn(2, 9, 7, 3, dtype=torch.float64)
    b = torch.randn_like(window.neighbourhoods(a))
    torch.testing.assert_close((window.neighbourhoods(a) * b).sum(), (a * window.fold(b, 9, 7)).sum())
    assert torch.equal(window.from_tiles(window.to_tiles(a), 9, 7), a)
    # Neighbourhood slot s of tile node q is the node at offset offset_index[q, s].
    around = window.neighbourhoods(a)  # tile 0 covers rows 0-3, cols 0-3; node (1, 2) is q = 6
    for s in range(window.side ** 2):
        k = int(window.offset_index[6, s])
        if k >= 0:
            dy, dx = radius_offsets(2, "square")[k].tolist()
            if 0 <= 1 + dy < 9 and 0 <= 2 + dx < 7:
                assert torch.equal(around[0, s], a[0, 1 + dy, 2 + dx])


def test_zero_feature_node_on_the_grid_gets_zero_and_finite_gradients():
    offsets = radius_offsets(1, "square")
    grid_weight = random_grid_graph(1, 4, 4, offsets, seed=2)
    h = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    h[0, :, 1, 2] = 0.0
    h.requires_grad_(True)
    out = grid_affinity_attention(h, grid_weight, offsets, torch.tensor([0.5]), 10.0, "reference")
    assert torch.equal(out[0, :, 1, 2], torch.zeros(3, dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(h.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.parametrize("form", ["reference", "paper"])
def test_grid_path_equals_edge_path_cuda(form):
    offsets = radius_offsets(2, "disc")
    cpu = grid_and_edge_paths(2, 7, 9, 6, offsets, form, dtype=torch.float32)
    (out, grad_h, grad_w), (edge_out, edge_grad_h, edge_grad_w) = grid_and_edge_paths(
        2, 7, 9, 6, offsets, form, device="cuda", dtype=torch.float32)
    assert out.is_cuda and edge_out.is_cuda
    torch.testing.assert_close(out, edge_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_h, edge_grad_h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad_w, edge_grad_w, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.cpu(), cpu[0][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_conv_matches_edge_by_edge_oracle_on_a_general_graph(form):
    generator = torch.Generator().manual_seed(3)
    edge_index, edge_weight = random_graph(30, 200, seed=3)
    x = torch.randn(30, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    conv = AffinityAttentionConv(form=form).double()
    out = conv(x, edge_index, edge_weight)
    w = conv.weight.detach().clone().requires_grad_(True)
    expected, _ = naive_attention(x, edge_index, edge_weight, w, 10.0, form)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad((out * upstream).sum(), [x, conv.weight])
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [x, w])
    torch.testing.assert_close(grads[0], expected_grads[0])
    torch.testing.assert_close(grads[1], expected_grads[1])


def test_gradcheck_edge_path():
    edge_index, edge_weight = random_graph(12, 50, seed=4)
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 12)
    x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: edge_aggregate(edge_attention(x, adjacency, w, 2.0, "paper"), x, adjacency),
        (x, w))


def test_gradcheck_grid_path():
    offsets = radius_offsets(1, "square")
    grid_weight = random_grid_graph(2, 4, 5, offsets, seed=5)
    h = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda h, w: grid_affinity_attention(h, grid_weight, offsets, w, 2.0, "paper"), (h, w))


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_weights_sum_to_one_over_present_edges(form):
    edge_index, edge_weight = random_graph(40, 300, seed=6)
    x = torch.randn(40, 8, dtype=torch.float64)
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 40)
    p = edge_attention(x, adjacency, torch.tensor(0.5, dtype=torch.float64), 10.0, form)
    totals = torch.zeros(40, dtype=torch.float64).index_add(0, adjacency.target, p)
    torch.testing.assert_close(totals, torch.ones(40, dtype=torch.float64))
    assert (p >= 0).all()

    offsets = radius_offsets(2, "disc")
    grid_weight = random_grid_graph(2, 6, 7, offsets, seed=6)
    h = torch.randn(2, 6, 7, 8, dtype=torch.float64)  # channels last
    # The weights are what the layer gives a constant feature: probe with an extra channel.
    probe = torch.cat([h, torch.ones(2, 6, 7, 1, dtype=torch.float64)], -1)
    probe_out = tiled_affinity_attention(probe, grid_tiles(grid_weight, offsets),
                                         torch.full((2,), 0.5, dtype=torch.float64), 10.0, form)
    # Every node keeps its self loop (cos = 1), so every row sums to exactly 1.
    torch.testing.assert_close(probe_out[..., -1], torch.ones(2, 6, 7, dtype=torch.float64))


def three_node_case():
    """Node 0 with neighbours 1 (cos < 0) and 2 (cos > 0)."""
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [1.0, 1.0]], dtype=torch.float64)
    edge_index = torch.tensor([[1, 2], [0, 0]])
    edge_weight = torch.tensor([0.9, 0.4], dtype=torch.float64)
    return x, edge_index, edge_weight


def test_reference_form_masks_negative_cosine_edges():
    x, edge_index, edge_weight = three_node_case()
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 3)
    w = torch.tensor(0.3, dtype=torch.float64)
    p = edge_attention(x, adjacency, w, 10.0, "reference")
    into_zero = {int(j): float(v) for j, v, i in zip(adjacency.source, p, adjacency.target) if i == 0}
    assert into_zero[1] == 0.0
    cos02 = 1 / math.sqrt(2)
    self_term, term2 = math.exp(0.3 + 10.0), math.exp(0.3 * cos02 + 10.0 * 0.4)
    assert into_zero[0] == pytest.approx(self_term / (self_term + term2), rel=1e-12)
    assert into_zero[2] == pytest.approx(term2 / (self_term + term2), rel=1e-12)


def test_paper_form_keeps_negative_cosine_edges_without_edge_term():
    x, edge_index, edge_weight = three_node_case()
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 3)
    p = edge_attention(x, adjacency, torch.tensor(0.3, dtype=torch.float64), 10.0, "paper")
    into_zero = {int(j): float(v) for j, v, i in zip(adjacency.source, p, adjacency.target) if i == 0}
    cos01 = -1 / math.sqrt(1.04)
    cos02 = 1 / math.sqrt(2)
    terms = [math.exp(0.3 + 10.0), math.exp(0.3 * cos01), math.exp(0.3 * cos02 + 10.0 * 0.4)]
    assert into_zero[1] > 0
    for j in range(3):
        assert into_zero[j] == pytest.approx(terms[j] / sum(terms), rel=1e-12)


def test_node_without_surviving_edges_receives_zero():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)  # node 0: zero features
    edge_index = torch.tensor([[1], [0]])
    conv = AffinityAttentionConv(form="reference").double()
    out = conv(x, edge_index, torch.tensor([0.5], dtype=torch.float64))
    assert torch.equal(out[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(out[1], x[1])
    assert torch.isfinite(out).all()


def test_w_and_x_receive_gradients():
    edge_index, edge_weight = random_graph(20, 120, seed=7, dtype=torch.float32)
    x = torch.randn(20, 6, requires_grad=True)
    conv = AffinityAttentionConv()
    assert 0.0 <= conv.weight.item() <= 1.0
    (conv(x, edge_index, edge_weight) ** 2).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().item() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()

    fixed = AffinityAttentionConv(requires_grad=False)
    assert "weight" not in dict(fixed.named_parameters())


def test_reset_parameters_draws_w_from_generator():
    conv = AffinityAttentionConv()
    conv.reset_parameters(torch.Generator().manual_seed(9))
    first = conv.weight.clone()
    conv.reset_parameters(torch.Generator().manual_seed(9))
    assert torch.equal(first, conv.weight)
    assert torch.equal(first, torch.rand(1, generator=torch.Generator().manual_seed(9)))


def test_adds_missing_self_loops_and_keeps_existing_weights():
    edge_index = torch.tensor([[1, 0], [0, 0]])  # node 0 has a self loop, node 1 none
    weight = torch.tensor([0.3, 0.7])
    adjacency = CsrAdjacency.from_edge_index(edge_index, weight, 2)
    edges = {(int(j), int(i)): (float(e), int(o)) for j, i, e, o in zip(
        adjacency.source, adjacency.target, adjacency.edge_weight, adjacency.order)}
    assert edges == {(1, 0): (pytest.approx(0.3), 0), (0, 0): (pytest.approx(0.7), 1),
                     (1, 1): (1.0, -1)}


def test_grid_path_saves_no_copy_per_offset():
    offsets = radius_offsets(4, "square")  # 81 offsets
    grid_weight = random_grid_graph(1, 20, 24, offsets, dtype=torch.float32)
    h = torch.randn(1, 64, 20, 24, requires_grad=True)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        grid_affinity_attention(h, grid_weight, offsets, torch.rand(1), 10.0, "reference")
    feature_bytes = h.numel() * h.element_size()
    # p and cos, [tiles, T², S²] = [9, 64, 256] scalars each, and h itself; nothing per offset.
    tile_bytes = 9 * 64 * 256 * 4
    assert sum(saved) <= 2 * feature_bytes + 2 * tile_bytes
    assert sum(saved) < 0.2 * offsets.shape[0] * feature_bytes


def test_input_validation():
    offsets = radius_offsets(1)
    with pytest.raises(ValueError, match="form"):
        AffinityAttentionConv(form="other")
    with pytest.raises(ValueError, match="grid_weight"):
        grid_affinity_attention(torch.rand(1, 2, 3, 3), torch.rand(1, 4, 3, 3), offsets,
                                torch.rand(1))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        grid_affinity_attention(torch.rand(2, 3, 3), torch.rand(1, 5, 3, 3), offsets, torch.rand(1))
    with pytest.raises(ValueError, match="w must"):
        grid_affinity_attention(torch.rand(2, 2, 3, 3), torch.rand(2, 5, 3, 3), offsets,
                                torch.rand(3))
    with pytest.raises(ValueError, match="edge_index"):
        CsrAdjacency.from_edge_index(torch.zeros(3, 4, dtype=torch.long), None, 4)
    tiles = grid_tiles(torch.rand(2, 5, 3, 3), offsets)
    with pytest.raises(ValueError, match="w must"):
        tiled_affinity_attention(torch.rand(2, 3, 3, 4), tiles, torch.rand(1))
    with pytest.raises(ValueError, match="h must"):
        tiled_affinity_attention(torch.rand(2, 3, 4, 4), tiles, torch.rand(2))
    adjacency = CsrAdjacency.from_edge_index(torch.tensor([[0], [1]]), None, 2)
    with pytest.raises(ValueError, match="x must"):
        edge_attention(torch.rand(3, 2), adjacency, torch.tensor(0.5))
