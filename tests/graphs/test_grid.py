"""Tests for graphwsss.graphs.grid: offsets, shifts, grid <-> edge conversion."""

import numpy as np
import pytest
import torch

from graphwsss.graphs.grid import (downsample_image, edges_to_grid, grid_to_edges,
                                   neighbor_valid, pairwise_grid, radius_offsets, shift)


def full_window_edge_count(h, w, offsets):
    return sum((h - abs(dy)) * (w - abs(dx)) for dy, dx in offsets.tolist()
               if abs(dy) < h and abs(dx) < w)


@pytest.mark.parametrize("shape, count", [("disc", 49), ("square", 81)])
def test_radius_offsets_count_and_order(shape, count):
    offsets = radius_offsets(4, shape)
    assert offsets.shape == (count, 2) and offsets.dtype == torch.long
    listed = [tuple(o) for o in offsets.tolist()]
    assert listed[0] == (0, 0)
    assert listed[1:] == sorted(listed[1:])                      # raster order after the self loop
    assert len(set(listed)) == count
    assert set(listed) == {(-dy, -dx) for dy, dx in listed}      # closed under negation
    if shape == "disc":
        assert all(dy * dy + dx * dx <= 16 for dy, dx in listed)
        assert (4, 0) in listed and (3, 3) not in listed
    else:
        assert max(max(abs(dy), abs(dx)) for dy, dx in listed) == 4
    assert torch.equal(radius_offsets(4, shape), offsets)       # deterministic


def test_radius_offsets_small_and_invalid():
    assert radius_offsets(0).tolist() == [[0, 0]]
    assert radius_offsets(1).tolist() == [[0, 0], [-1, 0], [0, -1], [0, 1], [1, 0]]
    with pytest.raises(ValueError):
        radius_offsets(-1)
    with pytest.raises(ValueError):
        radius_offsets(2, "diamond")


@pytest.mark.parametrize("dy, dx", [(0, 0), (1, 2), (-2, 1), (3, -4), (-1, -1), (0, -5), (7, 0),
                                    (-3, 9)])
def test_shift_matches_numpy_indexing(dy, dx):
    rng = np.random.default_rng(0)
    array = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    h, w = array.shape[-2:]
    rows, cols = np.arange(h) + dy, np.arange(w) + dx
    row_ok, col_ok = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    expected = np.full_like(array, -7.0)
    expected[..., np.flatnonzero(row_ok)[:, None], np.flatnonzero(col_ok)[None, :]] = \
        array[..., rows[row_ok][:, None], cols[col_ok][None, :]]
    out = shift(torch.from_numpy(array), dy, dx, fill=-7.0)
    assert out.shape == array.shape
    np.testing.assert_array_equal(out.numpy(), expected)


def test_shift_2d_and_integer():
    t = torch.arange(12).view(3, 4)
    assert shift(t, 1, -1).tolist() == [[0, 4, 5, 6], [0, 8, 9, 10], [0, 0, 0, 0]]


def test_neighbor_valid_matches_loops():
    h, w = 5, 4
    offsets = radius_offsets(2, "square")
    valid = neighbor_valid(h, w, offsets)
    assert valid.shape == (offsets.shape[0], h, w) and valid.dtype == torch.bool
    for o, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(h):
            for x in range(w):
                assert bool(valid[o, y, x]) == (0 <= y + dy < h and 0 <= x + dx < w)


def test_grid_to_edges_matches_loops_and_round_trips():
    h, w = 5, 4
    offsets = radius_offsets(2)
    generator = torch.Generator().manual_seed(0)
    grid = torch.rand(offsets.shape[0], h, w, generator=generator)
    grid[grid < 0.3] = 0.0
    grid = grid * neighbor_valid(h, w, offsets)
    edge_index, edge_weight = grid_to_edges(grid, offsets)

    expected = []   # (source, target, weight), target-major then offset order
    for y in range(h):
        for x in range(w):
            for o, (dy, dx) in enumerate(offsets.tolist()):
                if grid[o, y, x] > 0:
                    expected.append(((y + dy) * w + x + dx, y * w + x, float(grid[o, y, x])))
    assert edge_index.dtype == torch.long
    assert edge_index.t().tolist() == [[s, t] for s, t, _ in expected]
    assert edge_weight.tolist() == pytest.approx([v for _, _, v in expected])
    assert torch.equal(edges_to_grid(edge_index, edge_weight, offsets, h, w), grid)


def test_full_grid_edge_count_is_sum_of_valid_neighbours():
    h, w = 63, 47
    for shape in ("disc", "square"):
        offsets = radius_offsets(4, shape)
        edge_index, edge_weight = grid_to_edges(torch.ones(offsets.shape[0], h, w), offsets)
        valid = neighbor_valid(h, w, offsets)
        assert edge_index.shape[1] == int(valid.sum()) == full_window_edge_count(h, w, offsets)
        assert int(edge_index.min()) >= 0 and int(edge_index.max()) < h * w
        assert torch.all(edge_weight == 1)
    assert full_window_edge_count(h, w, radius_offsets(4, "square")) == 547 * 403


def test_grid_to_edges_ignores_out_of_grid_entries():
    offsets = radius_offsets(1)
    edge_index, _ = grid_to_edges(torch.ones(offsets.shape[0], 1, 1), offsets)
    assert edge_index.tolist() == [[0], [0]]


def test_edges_to_grid_rejects_unknown_displacement():
    offsets = radius_offsets(1)
    with pytest.raises(ValueError, match="displacement"):
        # node 0 -> node 5 on a 3x3 grid is (dy, dx) = (-1, -2), outside a radius-1 disc
        edges_to_grid(torch.tensor([[0], [5]]), torch.ones(1), offsets, 3, 3)


def test_pairwise_grid_symmetric_and_batched():
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 6, 5, generator=generator)
    offsets = radius_offsets(3, "square")

    def l1(center, neighbour):
        return (center - neighbour).abs().sum(-3)

    full = pairwise_grid(l1, a, offsets, fill=-1.0)
    assert full.shape == (2, offsets.shape[0], 6, 5)
    assert torch.allclose(pairwise_grid(l1, a, offsets, symmetric=True, fill=-1.0), full)
    valid = neighbor_valid(6, 5, offsets)
    for o, (dy, dx) in enumerate(offsets.tolist()):
        reference = (a - shift(a, dy, dx)).abs().sum(1)
        assert torch.allclose(full[:, o][:, valid[o]], reference[:, valid[o]])
        assert torch.all(full[:, o][:, ~valid[o]] == -1.0)
    assert torch.allclose(pairwise_grid(l1, a[1], offsets), torch.where(valid, full[1], 0.0))


def test_pairwise_grid_asymmetric_function():
    a = torch.arange(12.0).view(1, 3, 4)
    offsets = torch.tensor([[0, 1], [1, 0]])
    out = pairwise_grid(lambda c, n: (n - c)[..., 0, :, :], a, offsets)
    assert torch.all(out[0, :, :3] == 1) and torch.all(out[0, :, 3] == 0)
    assert torch.all(out[1, :2] == 4) and torch.all(out[1, 2] == 0)


def test_downsample_image_is_cell_mean():
    image = torch.zeros(3, 16, 8)
    image[:, :8] = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)
    image[0, 8:, :4] = 1.0
    out = downsample_image(image, 2, 1)
    assert out.shape == (3, 2, 1)
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.allclose(out[:, 1, 0], torch.tensor([0.5, 0.0, 0.0]))
    assert torch.allclose(downsample_image(image[None].repeat(2, 1, 1, 1), 2, 1)[1], out)
