"""Tests for graphwsss.nn.tiled_attention: the tiled grid form equals the CSR form."""

import pytest
import torch

from graphwsss.graphs.grid import radius_offsets
from graphwsss.nn.tiled_attention import (TiledWindow, grid_affinity_attention, grid_tiles,
                                          tiled_affinity_attention)

from .attention_cases import grid_and_edge_paths, random_grid_graph


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


def test_gradcheck_grid_path():
    offsets = radius_offsets(1, "square")
    grid_weight = random_grid_graph(2, 4, 5, offsets, seed=5)
    h = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda h, w: grid_affinity_attention(h, grid_weight, offsets, w, 2.0, "paper"), (h, w))


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_tiled_weights_sum_to_one_over_present_edges(form):
    offsets = radius_offsets(2, "disc")
    grid_weight = random_grid_graph(2, 6, 7, offsets, seed=6)
    h = torch.randn(2, 6, 7, 8, dtype=torch.float64)  # channels last
    # The weights are what the layer gives a constant feature: probe with an extra channel.
    probe = torch.cat([h, torch.ones(2, 6, 7, 1, dtype=torch.float64)], -1)
    probe_out = tiled_affinity_attention(probe, grid_tiles(grid_weight, offsets),
                                         torch.full((2,), 0.5, dtype=torch.float64), 10.0, form)
    # Every node keeps its self loop (cos = 1), so every row sums to exactly 1.
    torch.testing.assert_close(probe_out[..., -1], torch.ones(2, 6, 7, dtype=torch.float64))


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


def test_tiled_input_validation():
    offsets = radius_offsets(1)
    with pytest.raises(ValueError, match="grid_weight"):
        grid_affinity_attention(torch.rand(1, 2, 3, 3), torch.rand(1, 4, 3, 3), offsets,
                                torch.rand(1))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        grid_affinity_attention(torch.rand(2, 3, 3), torch.rand(1, 5, 3, 3), offsets, torch.rand(1))
    with pytest.raises(ValueError, match="w must"):
        grid_affinity_attention(torch.rand(2, 2, 3, 3), torch.rand(2, 5, 3, 3), offsets,
                                torch.rand(3))
    tiles = grid_tiles(torch.rand(2, 5, 3, 3), offsets)
    with pytest.raises(ValueError, match="w must"):
        tiled_affinity_attention(torch.rand(2, 3, 3, 4), tiles, torch.rand(1))
    with pytest.raises(ValueError, match="h must"):
        tiled_affinity_attention(torch.rand(2, 3, 4, 4), tiles, torch.rand(2))
