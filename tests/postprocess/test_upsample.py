"""Tests for graphwsss.postprocess.upsample: cells map to the right pixels, padding cropped."""

import numpy as np
import pytest
import torch

from graphwsss.postprocess import upsample_probs


def one_hot_grid(labels, num_classes):
    labels = torch.as_tensor(labels)
    return torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()


def tent(center, size, stride, grid):
    """Bilinear weight of a node at pixel coordinates 0..size-1 (clamped at the grid's ends)."""
    source = np.clip((np.arange(size) + 0.5) / stride - 0.5, 0, grid - 1)
    return np.clip(1 - np.abs(source - center), 0, None)


@pytest.mark.parametrize("image_size", [(24, 32), (21, 13), (17, 9)])
def test_single_node_spreads_as_bilinear_tent_over_its_cell(image_size):
    stride = 8
    height, width = image_size
    grid = (-(-height // stride), -(-width // stride))
    for node in [(0, 0), (grid[0] - 1, grid[1] - 1), (grid[0] // 2, grid[1] - 1)]:
        delta = torch.zeros(1, *grid)
        delta[0, node[0], node[1]] = 1
        full = upsample_probs(delta, image_size, stride=stride)[0].numpy()
        expected = np.outer(tent(node[0], height, stride, grid[0]),
                            tent(node[1], width, stride, grid[1]))
        np.testing.assert_allclose(full, expected, atol=1e-6)
        # Its peak lies in its own cell (even when the padding crops that cell).
        peak_row, peak_col = np.unravel_index(full.argmax(), full.shape)
        assert (peak_row // stride, peak_col // stride) == node


@pytest.mark.parametrize("image_size", [(24, 32), (21, 13), (17, 9), (1, 1)])
def test_constant_per_cell_prediction_lands_on_its_cell(image_size):
    stride = 8
    height, width = image_size
    grid = (-(-height // stride), -(-width // stride))
    generator = torch.Generator().manual_seed(0)
    # Labels varying along columns only: every pixel of cell j takes node j's class.
    stripes = torch.randint(0, 5, (grid[1],), generator=generator).expand(grid)
    full = upsample_probs(one_hot_grid(stripes, 5), image_size, stride=stride)
    assert full.shape == (5, height, width)
    expected = stripes.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:height, :width]
    assert torch.equal(full.argmax(0), expected)
    # Arbitrary labels: the central half of every cell takes the cell's class.
    labels = torch.randint(0, 5, grid, generator=generator)
    full = upsample_probs(one_hot_grid(labels, 5), image_size, stride=stride)
    expected = labels.repeat_interleave(stride, 0).repeat_interleave(stride, 1)[:height, :width]
    offsets = torch.arange(max(height, width)) % stride
    inner = (offsets >= 2) & (offsets < 6)
    central = inner[:height, None] & inner[None, :width]
    assert torch.equal(full.argmax(0)[central], expected[central])
    torch.testing.assert_close(full.sum(0), torch.ones(height, width))


def test_padding_is_cropped_at_bottom_right_not_rescaled():
    # Two cells: left class 0, right class 1; image 8 x 12 (the right cell half padding).
    full = upsample_probs(one_hot_grid([[0, 1]], 2), (8, 12), stride=8)
    # Bilinear between the cell centres x = 3.5 and 11.5: linear in between, flat outside.
    expected_right = np.clip((np.arange(12) - 3.5) / 8, 0, 1)
    np.testing.assert_allclose(full[1].numpy(), np.tile(expected_right, (8, 1)), atol=1e-6)


def test_batched_and_batch_padded_grid():
    labels = torch.tensor([[0, 1, 2], [2, 1, 0]])
    single = upsample_probs(one_hot_grid(labels, 3), (13, 20), stride=8)   # grid 2 x 3
    padded = torch.zeros(2, 3, 4, 5)
    padded[:, :, :2, :3] = one_hot_grid(labels, 3)
    padded[:, 0, 2:, :] = 1                                                 # batch padding
    padded[:, 0, :, 3:] = 1
    batched = upsample_probs(padded, (13, 20), stride=8, grid_size=(2, 3))
    assert batched.shape == (2, 3, 13, 20)
    torch.testing.assert_close(batched[1], single)


def test_dtype_and_device_preserved():
    probs = torch.full((2, 3, 4), 0.5, dtype=torch.float64)
    full = upsample_probs(probs, (20, 30), stride=8)
    assert full.dtype == torch.float64 and full.device == probs.device
    torch.testing.assert_close(full, torch.full((2, 20, 30), 0.5, dtype=torch.float64))


def test_grid_mismatch_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="ceil"):
        upsample_probs(torch.zeros(2, 4, 4), (24, 32), stride=8)          # needs 3 x 4
    with pytest.raises(ValueError, match="grid_size"):
        upsample_probs(torch.zeros(2, 5, 4), (24, 32), stride=8)          # batch-padded
    with pytest.raises(ValueError, match="exceeds"):
        upsample_probs(torch.zeros(2, 2, 4), (24, 32), stride=8, grid_size=(3, 4))
    with pytest.raises(ValueError, match="float"):
        upsample_probs(torch.zeros(2, 3, 4, dtype=torch.long), (24, 32))
