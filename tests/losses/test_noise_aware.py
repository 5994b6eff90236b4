"""Cross-entropy and the noise-aware loss of the segmenter (docs/method.md §9)."""

import math

import pytest
import torch
import torch.nn.functional as F

from graphwsss.losses.noise_aware import confidence, segmentation_loss


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    cosines = torch.rand(2, 3, 4, 5, generator=generator) * 2 - 1
    labels = torch.randint(0, 3, (2, 4, 5), generator=generator)
    labels[0, 0, :2] = 255
    return cosines, labels


def test_nal_equals_ce_when_both_estimates_agree():
    cosines, labels = _batch()
    nal, logs = segmentation_loss(cosines, labels, labels.clone(), 20.0, loss="nal")
    ce, _ = segmentation_loss(cosines, labels, None, 20.0, loss="ce")
    assert torch.allclose(nal, ce)
    assert logs["unreliable"] == 0.0 and logs["wce"] == 0.0
    reference = F.cross_entropy(20.0 * cosines, labels, ignore_index=255)
    assert torch.allclose(ce, reference, atol=1e-6)


def test_confidence_matches_a_hand_computation():
    cosines = torch.tensor([0.5, -0.2, 0.9]).view(1, 3, 1, 1)
    labels = torch.tensor([[[0]]])
    # D = 1 + cos = (1.5, 0.8, 1.9); alpha = D_0 / max D = 1.5 / 1.9; sigma = alpha^7.
    expected = (1.5 / 1.9) ** 7
    assert math.isclose(float(confidence(cosines, labels, 7.0)), expected, rel_tol=1e-5)
    assert math.isclose(float(confidence(cosines, torch.tensor([[[2]]]), 7.0)), 1.0)


def test_nal_weights_unreliable_pixels_by_sigma():
    # Two pixels: the first reliable, the second not (Y' differs).
    cosines = torch.tensor([[0.9, 0.1], [0.2, 0.4], [-0.5, 0.8]]).view(1, 3, 1, 2)
    cosines.requires_grad_(True)
    labels = torch.tensor([[[0, 1]]])
    second = torch.tensor([[[0, 2]]])
    tau, gamma, weight = 20.0, 7.0, 0.1
    loss, logs = segmentation_loss(cosines, labels, second, tau, loss="nal", gamma=gamma,
                                   weight=weight)
    log_probs = F.log_softmax(tau * cosines.detach(), dim=1)
    ce_reliable = -log_probs[0, 0, 0, 0]
    sigma = ((1 + 0.4) / (1 + 0.8)) ** gamma
    wce = sigma * -log_probs[0, 1, 0, 1]
    assert math.isclose(float(loss.detach()), float(ce_reliable + weight * wce), rel_tol=1e-5)
    assert logs["unreliable"] == 0.5
    # sigma carries no gradient: the gradient equals that of the sigma-weighted CE.
    loss.backward()
    reference = cosines.detach().clone().requires_grad_(True)
    lp = F.log_softmax(tau * reference, dim=1)
    (-lp[0, 0, 0, 0] - weight * sigma * lp[0, 1, 0, 1]).backward()
    assert torch.allclose(cosines.grad, reference.grad, atol=1e-5)


def test_ignored_pixels_and_upsampling():
    cosines, labels = _batch(1)
    labels[:] = 255
    loss, _ = segmentation_loss(cosines, labels, labels, 20.0)
    assert float(loss) == 0.0
    big = torch.zeros(2, 8, 10, dtype=torch.long)
    loss, _ = segmentation_loss(cosines, big, big, 20.0)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="loss"):
        segmentation_loss(cosines, big, big, 20.0, loss="dice")
