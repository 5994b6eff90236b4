"""Tests for graphwsss.losses.cam_pooling (CAM aggregations of docs/method.md §3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from graphwsss.losses import FeatureSimilarityLoss, cam_loss
from graphwsss.losses.cam_pooling import (BoxMasks, background_aware_pooling, bap_loss,
                                          binomial_importance_sampling,
                                          binomial_importance_sampling_loss, gap, gap_loss, gmp,
                                          gmp_loss, importance_sampling, importance_sampling_loss,
                                          pooling_defaults)


pytestmark = pytest.mark.usefixtures("single_thread")


def random_logits(batch=2, channels=4, height=5, width=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator)


# --------------------------------------------------------------------------------------------
# GAP and GMP
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Importance sampling, multinomial
# --------------------------------------------------------------------------------------------

def test_sampled_index_has_no_gradient_and_the_gathered_value_has():
    logits = random_logits().requires_grad_()
    sampled = importance_sampling(logits, num_samples=3,
                                  generator=torch.Generator().manual_seed(1))
    assert sampled.indices.dtype == torch.long and not sampled.indices.requires_grad
    assert sampled.values.shape == sampled.indices.shape == (2, 3, 3)
    expected = torch.softmax(logits, 1)[:, 1:].flatten(2).gather(2, sampled.indices)
    assert torch.equal(sampled.values, expected)
    sampled.values.sum().backward()
    # Gradient reaches every class logit of the sampled cells, and no other cell.
    touched = torch.zeros(2, 30, dtype=torch.bool)
    for b in range(2):
        touched[b, sampled.indices[b].flatten()] = True
    gradient_cells = logits.grad.abs().sum(1).flatten(1) > 0
    assert torch.equal(gradient_cells, touched)


def test_is_loss_gradient_only_at_sampled_cells_when_lambda_is_one():
    logits = random_logits(seed=3).requires_grad_()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    generator = torch.Generator().manual_seed(7)
    loss, logs = importance_sampling_loss(logits, labels, is_lambda=1.0, num_samples=2,
                                          generator=generator)
    loss.backward()
    indices = importance_sampling(logits, 2, torch.Generator().manual_seed(7)).indices
    touched = torch.zeros(2, 30, dtype=torch.bool)
    for b in range(2):
        touched[b, indices[b].flatten()] = True
    assert torch.equal(logits.grad.abs().sum(1).flatten(1) > 0, touched)
    assert loss.item() == pytest.approx(logs["sampled"])


def test_is_term_is_the_bce_of_the_sampled_probabilities():
    logits = random_logits(seed=8)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    _, logs = importance_sampling_loss(logits, labels, 1.0, 5, torch.Generator().manual_seed(2))
    sampled = importance_sampling(logits, 5, torch.Generator().manual_seed(2)).values
    expected = F.binary_cross_entropy(sampled, labels[:, :, None].expand_as(sampled))
    assert logs["sampled"] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("saturation", [18.0, 40.0])
def test_saturated_softmax_gives_bounded_gradients(saturation):
    # An absent class whose softmax is 1 - 1e-8 (18) or exactly 1 (40) in float32: BCE on the
    # probability gives gradients of ~7600 (18) or ~0 (40, log clamped); in log space the loss
    # keeps growing with the logit and its gradient stays at 1.
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1] = saturation
    logits.requires_grad_()
    labels = torch.tensor([[0.0, 1.0]])
    for loss in (importance_sampling_loss(logits, labels, 1.0, 4,
                                          torch.Generator().manual_seed(0))[0],
                 gmp_loss(logits, labels)):
        (gradient,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and loss.item() > saturation / 3
        assert 0.1 < gradient.abs().max() <= 1.0 + 1e-6


def test_sampling_is_reproducible_with_a_generator():
    logits = random_logits()
    first = importance_sampling(logits, 100, torch.Generator().manual_seed(5))
    second = importance_sampling(logits, 100, torch.Generator().manual_seed(5))
    other = importance_sampling(logits, 100, torch.Generator().manual_seed(6))
    assert torch.equal(first.indices, second.indices)
    assert not torch.equal(first.indices, other.indices)


def test_sampling_follows_the_class_probability_mass():
    logits = random_logits(batch=1, channels=3, height=2, width=3, seed=2)
    draws = importance_sampling(logits, 40000, torch.Generator().manual_seed(0)).indices
    probabilities = torch.softmax(logits, 1)[0, 1:].flatten(1)
    expected = probabilities / probabilities.sum(1, keepdim=True)
    observed = torch.stack([torch.bincount(draws[0, k], minlength=6) for k in range(2)]) / 40000
    assert torch.allclose(observed, expected, atol=0.015)


def test_one_and_hundred_samples_and_the_lambda_mix():
    logits = random_logits(seed=4).requires_grad_()
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    for samples in (1, 100):
        loss, logs = importance_sampling_loss(logits, labels, 0.8, samples,
                                              torch.Generator().manual_seed(0))
        assert math.isfinite(loss.item())
        assert loss.item() == pytest.approx(0.2 * logs["gap"] + 0.8 * logs["sampled"], rel=1e-5)
        (gradient,) = torch.autograd.grad(loss, logits)
        assert gradient.abs().sum() > 0
    assert pooling_defaults("is") == (0.8, 100)
    assert pooling_defaults("is_binomial") == (0.2, 10)
    assert pooling_defaults("is", 0.5, 1) == (0.5, 1)


def test_invalid_cells_are_never_sampled():
    logits = random_logits(batch=1)
    valid = torch.zeros(1, 5, 6, dtype=torch.bool)
    valid[0, 1, 2] = valid[0, 3, 4] = True
    indices = importance_sampling(logits, 200, torch.Generator().manual_seed(0), valid).indices
    assert set(indices.flatten().tolist()) <= {1 * 6 + 2, 3 * 6 + 4}


def test_sampling_argument_errors():
    logits = random_logits()
    with pytest.raises(ValueError, match="num_samples"):
        importance_sampling(logits, 0)
    with pytest.raises(ValueError, match="at least 2 channel"):
        importance_sampling(logits[:, :1])
    with pytest.raises(ValueError, match="valid"):
        importance_sampling(logits, 2, valid=torch.ones(2, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits"):
        gap(logits[0])


# --------------------------------------------------------------------------------------------
# Importance sampling, binomial
# --------------------------------------------------------------------------------------------

def test_binomial_sampling_gathers_logits_from_sigmoid_mass():
    logits = torch.full((1, 2, 3, 3), -30.0)
    logits[0, 0, 1, 2] = 5.0                     # class 0: almost all mass on cell 5
    logits[0, 1] = 0.0                           # class 1: uniform
    sampled = binomial_importance_sampling(logits, 400, torch.Generator().manual_seed(0))
    assert torch.equal(sampled.values, logits.flatten(2).gather(2, sampled.indices))
    share = (sampled.indices[0, 0] == 5).float().mean().item()
    assert share > 0.99                          # sigmoid(5) vs 8 * (sigmoid(-30) + 1e-5)
    counts = torch.bincount(sampled.indices[0, 1], minlength=9)
    assert counts.min() > 20                     # every cell drawn


def test_binomial_loss_mixes_gap_and_sampled_bce():
    logits = random_logits(channels=3).requires_grad_()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss, logs = binomial_importance_sampling_loss(logits, labels, 0.2, 10,
                                                   torch.Generator().manual_seed(3))
    sampled = binomial_importance_sampling(logits, 10, torch.Generator().manual_seed(3)).values
    expected_sampled = F.binary_cross_entropy_with_logits(
        sampled, labels[:, :, None].expand_as(sampled))
    assert logs["sampled"] == pytest.approx(expected_sampled.item(), rel=1e-6)
    assert logs["gap"] == pytest.approx(gap_loss(logits, labels).item(), rel=1e-6)
    assert loss.item() == pytest.approx(0.8 * logs["gap"] + 0.2 * logs["sampled"], rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# BAP
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------

def test_cam_loss_dispatches_and_adds_the_weighted_fsl():
    logits = random_logits(channels=4)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    image = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    assert cam_loss(logits[:, 1:], labels, "gap")[0].item() == pytest.approx(
        gap_loss(logits[:, 1:], labels).item())
    assert cam_loss(logits, labels, "gmp")[0].item() == pytest.approx(
        gmp_loss(logits, labels).item())
    loss, logs = cam_loss(logits, labels, "is", generator=torch.Generator().manual_seed(0))
    direct, _ = importance_sampling_loss(logits, labels, 0.8, 100,
                                         torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(direct.item())
    fsl = FeatureSimilarityLoss(sigma=1.0, normalization="pixels")
    with_fsl, logs = cam_loss(logits, labels, "gmp", fsl=fsl, fsl_variant="multinomial",
                              image=image)
    expected = fsl(torch.softmax(logits, 1), image)
    assert logs["fsl"] == pytest.approx(expected.item(), rel=1e-5)
    assert with_fsl.item() == pytest.approx(logs["classification"] + 0.5 * logs["fsl"], rel=1e-5)
    binomial, logs = cam_loss(logits[:, 1:], labels, "is_binomial", fsl=fsl,
                              fsl_variant="binomial", fsl_weight=2.0, image=image,
                              generator=torch.Generator().manual_seed(0))
    assert binomial.item() == pytest.approx(logs["classification"] + 2.0 * logs["fsl"], rel=1e-5)


def test_cam_loss_errors_name_the_problem():
    logits = random_logits(channels=4)
    labels = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="labels must be"):
        cam_loss(logits, labels, "gap")                       # 4 sigmoid logits, 3 tags
    with pytest.raises(ValueError, match="pooling must be"):
        cam_loss(logits, labels, "mean")
    fsl = FeatureSimilarityLoss(sigma=1.0)
    with pytest.raises(ValueError, match="binomial FSL does not fit"):
        cam_loss(logits, labels, "is", fsl=fsl, fsl_variant="binomial", image=torch.rand(2, 3, 5, 6))
    with pytest.raises(ValueError, match="needs the image"):
        cam_loss(logits, labels, "is", fsl=fsl, fsl_variant="multinomial")
    with pytest.raises(ValueError, match="bap"):
        cam_loss(logits, labels, "bap")
