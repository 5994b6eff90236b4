"""Tests for graphwsss.losses.background_aware_pooling (BAP, docs/method.md §3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from graphwsss.losses.background_aware_pooling import BoxMasks, background_aware_pooling, bap_loss


pytestmark = pytest.mark.usefixtures("single_thread")


def hand_made_bap():
    """A 4x4 grid: background feature (1, 0) everywhere except a 2x2 object of feature (0, 1)
    inside a 3x3 box whose other cells look like background."""
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0] = 1.0
    features[0, :, 1:3, 1:3] = torch.tensor([0.0, 1.0])[:, None, None]
    box = torch.zeros(1, 1, 4, 4)
    box[0, 0, 0:3, 0:3] = 1.0
    background = 1.0 - box[:, 0]
    return features, box, background


def test_bap_background_prototype_attention_and_foreground_feature():
    features, box, background = hand_made_bap()
    pooled = background_aware_pooling(features, box, background, grid_size=1)
    assert torch.allclose(pooled.prototypes, torch.tensor([[[1.0, 0.0]]]))
    assert pooled.prototype_valid.tolist() == [[True]]
    expected_attention = torch.ones(4, 4)
    expected_attention[1:3, 1:3] = 0.0          # the object is orthogonal to the background
    assert torch.allclose(pooled.attention[0], expected_attention)
    # The background-like cells of the box get weight eps only.
    assert torch.allclose(pooled.foreground, torch.tensor([[[0.0, 1.0]]]), atol=1e-5)
    assert pooled.foreground_valid.tolist() == [[True]]
    # Plain masked average pooling would mix in the background: 5/9 of (1, 0).
    plain = (features * box).sum((2, 3)) / box.sum()
    assert torch.allclose(plain, torch.tensor([[5 / 9, 4 / 9]]))


def test_bap_grid_cells_have_their_own_prototypes():
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, :, :2] = 1.0                 # left half (1, 0)
    features[0, 1, :, 2:] = 1.0                 # right half (0, 1)
    box = torch.zeros(1, 1, 4, 4)
    box[0, 0, 0:2, 0:2] = 1.0                   # the top-left cell is all box
    pooled = background_aware_pooling(features, box, 1.0 - box[:, 0], grid_size=2)
    assert pooled.prototype_valid.tolist() == [[False, True, True, True]]
    assert torch.allclose(pooled.prototypes[0, 1:], torch.tensor([[0.0, 1.0], [1.0, 0.0],
                                                                  [0.0, 1.0]]))
    # Every cell matches one of the three prototypes exactly and is orthogonal to the rest.
    assert torch.allclose(pooled.attention[0, :, :2], torch.full((4, 2), 1 / 3))
    assert torch.allclose(pooled.attention[0, :, 2:], torch.full((4, 2), 2 / 3))


def test_bap_loss_is_low_for_a_matching_classifier_and_differentiable():
    features, box, background = hand_made_bap()
    features.requires_grad_()
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])   # background, class 1, 2

    def classify(vectors):
        return 20.0 * F.normalize(vectors, dim=-1) @ F.normalize(weight, dim=1).T

    boxes = BoxMasks(box, torch.tensor([[1]]), background)
    loss, logs = bap_loss(features, boxes, classify, grid_size=1)
    # Foreground feature (0, 1): cosines 0, 1, 1/sqrt(2) with the three classes.
    expected = math.log(1 + math.exp(-20.0) + math.exp(20.0 / math.sqrt(2) - 20.0))
    assert logs["foreground"] == pytest.approx(expected, rel=1e-3)
    assert logs["background"] < 1e-6
    wrong, _ = bap_loss(features, BoxMasks(box, torch.tensor([[2]]), background), classify, 1)
    assert wrong.item() > loss.item() + 1.0
    wrong.backward()
    assert features.grad.abs().sum() > 0


def test_bap_without_boxes_or_background_stays_finite_and_connected():
    features = torch.randn(1, 3, 4, 4, requires_grad=True)
    weight = torch.randn(3, 3, requires_grad=True)

    def classify(vectors):
        return vectors @ weight.T

    padding = BoxMasks(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, dtype=torch.long),
                       torch.ones(1, 4, 4))
    loss, logs = bap_loss(features, padding, classify)
    assert logs["foreground"] == 0.0 and math.isfinite(loss.item())
    everywhere = BoxMasks(torch.ones(1, 1, 4, 4), torch.tensor([[1]]), torch.zeros(1, 4, 4))
    loss, logs = bap_loss(features, everywhere, classify)
    assert logs["background"] == 0.0
    loss.backward()
    assert weight.grad is not None and features.grad is not None


def test_bap_shape_errors():
    features, box, background = hand_made_bap()
    with pytest.raises(ValueError, match="box_masks"):
        background_aware_pooling(features, box[0], background)
    with pytest.raises(ValueError, match="background"):
        background_aware_pooling(features, box, background[:, :2])
    with pytest.raises(ValueError, match="grid_size"):
        background_aware_pooling(features, box, background, grid_size=0)
