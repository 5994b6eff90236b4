"""Tests for graphwsss.losses.global_pooling (GAP and GMP, docs/method.md §3)."""

import math

import pytest
import torch

from graphwsss.losses.global_pooling import gap, gap_loss, gmp, gmp_loss

from .cam_cases import random_logits


pytestmark = pytest.mark.usefixtures("single_thread")


def test_gap_is_the_mean_logit_and_respects_the_valid_mask():
    logits = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[-1.0, 0.0], [0.0, 5.0]]]])
    assert torch.allclose(gap(logits), torch.tensor([[3.0, 1.0]]))
    valid = torch.tensor([[[True, True], [True, False]]])
    assert torch.allclose(gap(logits, valid), torch.tensor([[2.0, -1.0 / 3.0]]))


def test_gap_loss_is_bce_of_the_sigmoid_of_the_mean():
    logits = torch.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]]])            # means 2 and -1
    labels = torch.tensor([[1.0, 0.0]])
    expected = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    assert gap_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # With a background channel its target is 1.
    with_background = torch.cat([torch.full((1, 1, 1, 2), 4.0), logits], dim=1)
    expected_bg = (2 * expected + -math.log(1 / (1 + math.exp(-4.0)))) / 3
    assert gap_loss(with_background, labels).item() == pytest.approx(expected_bg, rel=1e-6)


def test_gmp_is_the_largest_softmax_probability_by_hand():
    # Two cells; channel 0 background. Cell 0: logits (0, ln 3) -> (0.25, 0.75).
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), -math.log(3.0)]]]])
    assert torch.allclose(gmp(logits), torch.tensor([[0.75, 0.75]]))
    valid = torch.tensor([[[False, True]]])
    assert torch.allclose(gmp(logits, valid), torch.tensor([[0.75, 0.25]]))
    loss = gmp_loss(logits, torch.tensor([[1.0]]))
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)   # both targets 1, both 0.75


def test_pooling_argument_errors_name_the_argument():
    logits = random_logits()
    with pytest.raises(ValueError, match=r"logits must be a float \[B, C, h, w\] tensor"):
        gap(logits[0])
    with pytest.raises(ValueError, match=r"valid must be a \[B, h, w\] = \[2, 5, 6\] mask"):
        gmp(logits, torch.ones(2, 5, 5, dtype=torch.bool))
