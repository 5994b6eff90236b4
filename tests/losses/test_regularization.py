"""Tests for graphwsss.losses.regularization (Potts L_reg, eq. 3.22) against a brute force."""

import itertools
import math

import pytest
import torch

from graphwsss.graphs.grid import radius_offsets
from graphwsss.losses import potts_kernel, potts_regularization


def brute_force(probs, image, radius, sigma_xy=6.0, sigma_rgb=0.1, valid=None, shape="disc"):
    """Double loop over all ordered node pairs (i != j) within the neighbourhood."""
    _, height, width = probs.shape
    neighbourhood = {tuple(o) for o in radius_offsets(radius, shape=shape).tolist()} - {(0, 0)}
    nodes = list(itertools.product(range(height), range(width)))
    if valid is not None:
        nodes = [n for n in nodes if valid[n]]
    total = 0.0
    for (yi, xi), (yj, xj) in itertools.product(nodes, nodes):
        if (yj - yi, xj - xi) not in neighbourhood:
            continue
        colour = float(((image[:, yi, xi] - image[:, yj, xj]) ** 2).sum())
        kernel = math.exp(-((yj - yi) ** 2 + (xj - xi) ** 2) / (2 * sigma_xy ** 2)
                          - colour / (2 * sigma_rgb ** 2))
        total = total + kernel * (1 - (probs[:, yi, xi] * probs[:, yj, xj]).sum())
    return total / len(nodes)


def _random_case(seed, channels=3, height=4, width=5):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(channels, height, width, generator=generator,
                                      dtype=torch.float64) * 2, dim=0)
    # Colours close enough (sigma_rgb = 0.1) that the colour term does not vanish.
    image = 0.5 + 0.1 * torch.rand(3, height, width, generator=generator, dtype=torch.float64)
    return probs, image


def test_zero_for_constant_one_hot_prediction():
    probs = torch.zeros(3, 6, 7)
    probs[2] = 1.0
    image = torch.rand(3, 6, 7)
    assert potts_regularization(probs, image).item() == pytest.approx(0.0, abs=1e-7)


def test_positive_for_checkerboard():
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
    board = ((rows + cols) % 2).float()
    probs = torch.stack([board, 1 - board])
    image = torch.full((3, 6, 7), 0.5)        # uniform colour: every pair weighs in
    loss = potts_regularization(probs, image, radius=1)
    assert loss.item() > 0
    # r = 1: the 4 neighbours all disagree, kernel exp(-1/72); ordered pairs = 2*(6*6 + 5*7).
    expected = 2 * (6 * 6 + 5 * 7) * math.exp(-1 / 72) / 42
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("radius", [1, 2, 5])
def test_matches_brute_force_on_4x5_grid(radius):
    probs, image = _random_case(radius)
    loss = potts_regularization(probs, image, radius=radius)
    assert loss.item() == pytest.approx(brute_force(probs, image, radius).item(), rel=1e-9)


def test_square_neighbourhood_and_other_sigmas_match_brute_force():
    probs, image = _random_case(7)
    loss = potts_regularization(probs, image, radius=2, sigma_xy=1.5, sigma_rgb=0.3,
                                shape="square")
    expected = brute_force(probs, image, 2, sigma_xy=1.5, sigma_rgb=0.3, shape="square")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_valid_mask_excludes_padded_nodes():
    probs, image = _random_case(3)
    valid = torch.ones(4, 5, dtype=torch.bool)
    valid[3, :] = False
    valid[:, 4] = False                        # padding on the bottom row and right column
    loss = potts_regularization(probs, image, radius=2, valid_mask=valid)
    expected = brute_force(probs, image, 2, valid=valid)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    # Equal to the loss on the cropped grid.
    cropped = potts_regularization(probs[:, :3, :4], image[:, :3, :4], radius=2)
    assert loss.item() == pytest.approx(cropped.item(), rel=1e-9)


def test_gradient_matches_brute_force():
    probs, image = _random_case(11)
    probs_a = probs.clone().requires_grad_(True)
    probs_b = probs.clone().requires_grad_(True)
    potts_regularization(probs_a, image, radius=2).backward()
    brute_force(probs_b, image, 2).backward()
    assert torch.allclose(probs_a.grad, probs_b.grad, rtol=1e-9, atol=1e-12)


def test_precomputed_kernel_gives_the_same_loss():
    probs, image = _random_case(5)
    kernel = potts_kernel(image, radius=3)
    assert kernel.weight.shape[1:] == (4, 5)
    # One offset per pair {o, -o}, no self pair.
    offsets = {tuple(o) for o in kernel.offsets.tolist()}
    assert (0, 0) not in offsets and not any((-dy, -dx) in offsets for dy, dx in offsets)
    direct = potts_regularization(probs, image, radius=3)
    assert potts_regularization(probs, kernel=kernel).item() == pytest.approx(direct.item())


def test_shape_errors():
    probs, image = _random_case(0)
    with pytest.raises(ValueError):
        potts_regularization(probs, image[:, :3])
    with pytest.raises(ValueError):
        potts_regularization(probs, image[:2])
    with pytest.raises(ValueError):
        potts_regularization(probs)
    with pytest.raises(ValueError):
        potts_regularization(probs, image, valid_mask=torch.ones(3, 5, dtype=torch.bool))
