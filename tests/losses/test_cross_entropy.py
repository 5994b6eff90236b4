"""Tests for graphwsss.losses.cross_entropy (L_ce, docs/method.md §6) against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from graphwsss.losses import seed_cross_entropy, upsampled_seed_cross_entropy

V = 255
LN3 = math.log(3.0)
LN2 = math.log(2.0)

# K = 3 classes on a 2x2 grid. Softmax per node:
#   (0,0) [0, 0, 0]        -> [1/3, 1/3, 1/3]   seed 0: loss ln 3
#   (0,1) [0, ln 3, 0]     -> [1/5, 3/5, 1/5]   seed 0: loss ln 5
#   (1,0) [0, 0, ln 2]     -> [1/4, 1/4, 1/2]   seed 2: loss ln 2
#   (1,1) [9, -4, 7]                            unlabeled
LOGITS = torch.tensor([[[0.0, 0.0], [0.0, 9.0]],
                       [[0.0, LN3], [0.0, -4.0]],
                       [[0.0, 0.0], [LN2, 7.0]]])
SEEDS = torch.tensor([[0, 0], [2, V]])


def test_background_and_foreground_averaged_separately():
    loss = seed_cross_entropy(LOGITS, SEEDS)
    expected = (math.log(3) + math.log(5)) / 2 + math.log(2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_plain_mean_without_split():
    loss = seed_cross_entropy(LOGITS, SEEDS, split_background=False)
    expected = (math.log(3) + math.log(5) + math.log(2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_generalized_cross_entropy_by_hand():
    """(1 - O^q) / q per seed: O = 1/3, 1/5 (background) and 1/2 (class 2)."""
    q = 0.7
    term = lambda probability: (1 - probability ** q) / q          # noqa: E731
    loss = seed_cross_entropy(LOGITS, SEEDS, gce_q=q)
    expected = (term(1 / 3) + term(1 / 5)) / 2 + term(1 / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert seed_cross_entropy(LOGITS, SEEDS, gce_q=1e-6).item() == pytest.approx(
        seed_cross_entropy(LOGITS, SEEDS).item(), rel=1e-5)


def test_generalized_cross_entropy_pulls_less_on_unlikely_seeds():
    """The GCE gradient is the CE gradient times O^q: a seed the model finds unlikely (a wrong
    seed) weighs less against a likely one than under the cross-entropy."""
    logits = torch.tensor([[[4.0, -4.0]], [[-4.0, 4.0]]], requires_grad=True)   # [2, 1, 2]
    seeds = torch.tensor([[1, 1]])              # node 0 looks like class 0: an unlikely seed
    ratios = []
    for q in (0.0, 0.7):
        grad, = torch.autograd.grad(seed_cross_entropy(logits, seeds, gce_q=q), logits)
        ratios.append(grad[:, 0, 0].abs().sum() / grad[:, 0, 1].abs().sum())
    assert ratios[1] < ratios[0] * 0.01


def test_empty_group_contributes_zero():
    only_foreground = torch.tensor([[V, V], [2, V]])
    assert seed_cross_entropy(LOGITS, only_foreground).item() == pytest.approx(math.log(2))
    only_background = torch.tensor([[0, 0], [V, V]])
    assert seed_cross_entropy(LOGITS, only_background).item() == pytest.approx(
        (math.log(3) + math.log(5)) / 2)


def test_no_seeds_is_zero_and_backward_works():
    logits = LOGITS.clone().requires_grad_(True)
    loss = seed_cross_entropy(logits, torch.full((2, 2), V))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_gradient_only_on_seeded_nodes():
    logits = LOGITS.clone().requires_grad_(True)
    seed_cross_entropy(logits, SEEDS).backward()
    assert torch.all(logits.grad[:, 1, 1] == 0)
    assert torch.all(logits.grad[:, 0, 0].abs() > 0)
    # Gradient of -log softmax_y / |group| is (softmax - onehot) / |group|.
    expected = (torch.softmax(LOGITS[:, 1, 0], 0) - torch.tensor([0.0, 0.0, 1.0])) / 1
    assert torch.allclose(logits.grad[:, 1, 0], expected, atol=1e-6)


def test_upsampled_equals_grid_when_sizes_match():
    logits = torch.randn(4, 5, 6)
    seeds = torch.randint(0, 4, (5, 6))
    seeds[0, :3] = V
    grid = seed_cross_entropy(logits, seeds)
    assert upsampled_seed_cross_entropy(logits, seeds, (5, 6)).item() == pytest.approx(grid.item())
    assert seed_cross_entropy(logits, seeds, image_size=(5, 6)).item() == pytest.approx(grid.item())


def test_upsampled_constant_logits_by_hand():
    # Spatially constant logits stay constant under bilinear upsampling.
    logits = torch.zeros(3, 2, 3)
    logits[1] = LN3                                   # softmax [1/5, 3/5, 1/5] everywhere
    seeds = torch.full((8, 12), V)
    seeds[0, 0] = seeds[7, 11] = 0                    # background: ln 5 each
    seeds[3, 4] = 1                                   # foreground: ln(5/3)
    loss = upsampled_seed_cross_entropy(logits, seeds, (8, 12))
    assert loss.item() == pytest.approx(math.log(5) + math.log(5 / 3), rel=1e-6)


def test_upsampled_uses_bilinear_align_corners_false():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 3, requires_grad=True)
    seeds = torch.randint(0, 3, (7, 9))
    up = F.interpolate(logits[None], size=(7, 9), mode="bilinear", align_corners=False)[0]
    expected = seed_cross_entropy(up, seeds)
    loss = upsampled_seed_cross_entropy(logits, seeds)       # image size defaults to seeds'
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_shape_errors():
    with pytest.raises(ValueError):
        seed_cross_entropy(LOGITS, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        seed_cross_entropy(LOGITS[0], SEEDS)
    with pytest.raises(ValueError):
        seed_cross_entropy(LOGITS, SEEDS.float())
    with pytest.raises(ValueError):
        seed_cross_entropy(LOGITS, torch.zeros(4, 4, dtype=torch.long), image_size=(5, 5))
