"""Tests for graphwsss.losses.importance_sampling (multinomial and binomial IS, docs/method.md §3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from graphwsss.losses.global_pooling import gap_loss, gmp_loss
from graphwsss.losses.importance_sampling import (binomial_importance_sampling,
                                                  binomial_importance_sampling_loss,
                                                  importance_sampling, importance_sampling_loss,
                                                  pooling_defaults)

from .cam_cases import random_logits


pytestmark = pytest.mark.usefixtures("single_thread")


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
    with pytest.raises(ValueError, match="logits must be a float"):
        importance_sampling(logits[0])


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
