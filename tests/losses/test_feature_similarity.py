"""Tests for graphwsss.losses.feature_similarity (FSL, docs/method.md §3 eqs. 9–12)."""

import math

import pytest
import torch

from graphwsss.graphs.grid import downsample_image
from graphwsss.losses import FeatureSimilarityLoss, feature_similarity_loss, fsl_activations
from graphwsss.losses.feature_similarity import (FSL_VARIANT_WEIGHTS,
                                                 feature_similarity_loss_allpairs)


pytestmark = pytest.mark.usefixtures("single_thread")


def random_problem(seed=0, batch=2, channels=4, height=6, width=9, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, channels, height, width, generator=generator, dtype=dtype) * 2
    activations = torch.softmax(logits, dim=1)
    image = torch.rand(batch, 3, height, width, generator=generator, dtype=dtype)
    return activations, image


def loss_and_grads(fn, activations, image, sigma, mu, **options):
    activations = activations.clone().requires_grad_()
    inputs = [activations] + [v for v in (sigma, mu) if isinstance(v, torch.Tensor)]
    loss = fn(activations, image, sigma, mu, **options)
    return loss.detach(), torch.autograd.grad(loss, inputs)


# --------------------------------------------------------------------------------------------
# The formula
# --------------------------------------------------------------------------------------------

def test_two_pixel_grid_by_hand():
    activations = torch.tensor([[[[0.9, 0.2]], [[0.1, 0.8]]]], dtype=torch.float64)  # [1,2,1,2]
    image = torch.tensor([[[[0.1, 0.7]], [[0.2, 0.5]], [[0.3, 0.3]]]], dtype=torch.float64)
    sigma, mu = 2.0, 1.0
    w = math.exp(-1 / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    g = 0.5 * ((0.9 - 0.2) ** 2 + (0.1 - 0.8) ** 2)
    delta = (0.6 + 0.3 + 0.0) / 3
    f = math.tanh(mu + math.log(delta / (1 - delta)))
    expected = -(2 * w * g * f) / (2 * 2)       # both ordered pairs; Z = (hw)^2 = 4
    loss = feature_similarity_loss(activations, image, sigma, mu)
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    pixels = feature_similarity_loss(activations, image, sigma, mu, normalization="pixels")
    assert pixels.item() == pytest.approx(expected * 2, rel=1e-12)     # Z = hw = 2


@pytest.mark.parametrize("normalization", ["pairs", "pixels"])
def test_covering_window_equals_all_pairs(normalization):
    activations, image = random_problem(seed=1)
    options = dict(eps=1e-5, normalization=normalization)
    ours, ours_grad = loss_and_grads(feature_similarity_loss, activations, image, 2.0, 1.5,
                                     window=8, **options)
    reference, reference_grad = loss_and_grads(feature_similarity_loss_allpairs, activations,
                                               image, 2.0, 1.5, **options)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-10)
    torch.testing.assert_close(ours_grad[0], reference_grad[0], rtol=1e-9, atol=1e-15)
    # A larger window changes nothing once it covers the grid.
    larger = feature_similarity_loss(activations, image, 2.0, 1.5, window=40, **options)
    assert larger.item() == pytest.approx(ours.item(), rel=1e-12)


def test_learnable_sigma_and_mu_gradients_equal_all_pairs():
    activations, image = random_problem(seed=2, height=7, width=5)
    sigma = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    ours, ours_grad = loss_and_grads(feature_similarity_loss, activations, image, sigma, mu,
                                     window=6)
    reference, reference_grad = loss_and_grads(feature_similarity_loss_allpairs, activations,
                                               image, sigma, mu)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-10)
    for mine, theirs in zip(ours_grad, reference_grad):
        torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-15)
    assert ours_grad[1].abs().item() > 0 and ours_grad[2].abs().item() > 0


def test_gradcheck_small_window():
    activations, image = random_problem(seed=3, batch=1, channels=3, height=4, width=5)
    sigma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    mu = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    activations.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, s, m: feature_similarity_loss(a, image, s, m, window=2),
        (activations, sigma, mu))


def test_default_window_is_three_sigma_and_close_to_all_pairs():
    # Smooth activations on a 20x20 grid: pairs beyond 3 sigma carry little of the sum.
    generator = torch.Generator().manual_seed(4)
    coarse = torch.randn(1, 3, 4, 4, generator=generator, dtype=torch.float64) * 3
    activations = torch.softmax(torch.nn.functional.interpolate(
        coarse, size=(20, 20), mode="bilinear", align_corners=False), dim=1)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=generator,
                                                       dtype=torch.float64),
                                            size=(20, 20), mode="bilinear", align_corners=False)
    default = feature_similarity_loss(activations, image, sigma=1.5)
    assert default.item() == pytest.approx(
        feature_similarity_loss(activations, image, sigma=1.5, window=5).item(), rel=1e-12)
    reference = feature_similarity_loss_allpairs(activations, image, sigma=1.5)
    assert default.item() == pytest.approx(reference.item(), rel=1e-2)
    truncated = feature_similarity_loss(activations, image, sigma=1.5, window=1)
    assert abs(truncated.item() - reference.item()) > 10 * abs(default.item() - reference.item())


def test_prefers_activation_edges_on_image_edges():
    height, width = 8, 10
    image = torch.zeros(1, 3, height, width, dtype=torch.float64)
    image[..., 5:] = 1.0                                   # colour edge between columns 4 and 5
    activations = {}
    for name, edge in (("aligned", 5), ("shifted", 3)):
        a = torch.zeros(1, 2, height, width, dtype=torch.float64)
        a[:, 0, :, :edge] = 1.0
        a[:, 1, :, edge:] = 1.0
        activations[name] = a
    aligned = feature_similarity_loss(activations["aligned"], image, sigma=2.0)
    shifted = feature_similarity_loss(activations["shifted"], image, sigma=2.0)
    assert aligned.item() < 0 < shifted.item()


def test_memory_does_not_grow_with_the_window():
    """Autograd keeps only the inputs, whatever the number of offsets."""
    activations, image = random_problem(seed=5, batch=2, channels=5, height=12, width=12,
                                        dtype=torch.float32)
    activations.requires_grad_()

    def saved_bytes(window):
        saved = []

        def pack(tensor):
            saved.append(tensor.numel())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            feature_similarity_loss(activations, image, sigma=1.0, window=window)
        return saved

    small, large = saved_bytes(1), saved_bytes(11)
    # Only the two inputs are saved at their size; the rest are per-offset scalars w_o, S_o
    # (half of the window: 12 * 22 = 264 offsets for radius 11 on a 12x12 grid).
    input_sizes = sorted([activations.numel(), image.numel()])
    assert sorted(n for n in large if n > 264) == input_sizes
    assert sorted(n for n in small if n > 264) == input_sizes
    assert sum(large) < sum(input_sizes) + 8 * 264


def test_image_is_resized_to_the_cam_grid():
    activations, _ = random_problem(seed=6, height=5, width=7)
    big_image = torch.rand(2, 3, 40, 56, dtype=torch.float64)
    resized = downsample_image(big_image, 5, 7)
    assert feature_similarity_loss(activations, big_image).item() == pytest.approx(
        feature_similarity_loss(activations, resized).item(), rel=1e-12)


def test_float32_and_single_cell_grid():
    activations, image = random_problem(seed=7, dtype=torch.float32)
    loss = feature_similarity_loss(activations, image)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    single = torch.rand(2, 3, 1, 1, requires_grad=True)
    zero = feature_similarity_loss(single, torch.rand(2, 3, 1, 1))
    zero.backward()
    assert zero.item() == 0.0 and single.grad is not None


@pytest.mark.parametrize("call, message", [
    (lambda a, x: feature_similarity_loss(a[0], x), "activations must be"),
    (lambda a, x: feature_similarity_loss(a, x[:, :2]), "image must be"),
    (lambda a, x: feature_similarity_loss(a, x[:1]), "batch"),
    (lambda a, x: feature_similarity_loss(a, (x - 0.45) / 0.225), r"\[0, 1\]"),
    (lambda a, x: feature_similarity_loss(a, x, sigma=0.0), "sigma must be positive"),
    (lambda a, x: feature_similarity_loss(a, x, sigma=torch.ones(2)), "sigma must be"),
    (lambda a, x: feature_similarity_loss(a, x, mu=float("nan")), "mu must be finite"),
    (lambda a, x: feature_similarity_loss(a, x, window=0), "window"),
    (lambda a, x: feature_similarity_loss(a, x, eps=0.0), "eps"),
    (lambda a, x: feature_similarity_loss(a, x, normalization="mean"), "normalization"),
    (lambda a, x: feature_similarity_loss_allpairs(a, x, sigma=-1.0), "sigma must be positive"),
])
def test_bad_input_errors(call, message):
    activations, image = random_problem(seed=8)
    with pytest.raises(ValueError, match=message):
        call(activations, image)


# --------------------------------------------------------------------------------------------
# Variants and module
# --------------------------------------------------------------------------------------------

def test_multinomial_activations_are_the_softmax():
    scores = torch.randn(2, 4, 3, 5)
    activations = fsl_activations(scores, variant="multinomial")
    torch.testing.assert_close(activations, torch.softmax(scores, dim=1))
    torch.testing.assert_close(fsl_activations(scores, torch.ones(2, 3)), activations)


def test_binomial_activations_mask_normalise_and_add_background():
    scores = torch.randn(2, 3, 4, 6) * 3
    scores[0, 1] = scores[0, 1].abs() + 0.5            # a positive class map
    labels = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    activations = fsl_activations(scores, labels, variant="binomial")
    assert activations.shape == (2, 4, 4, 6)
    foreground = activations[:, 1:]
    assert foreground[0, 0].abs().max() == 0 and foreground[1, 1].abs().max() == 0   # absent
    assert foreground[0, 1].max().item() == pytest.approx(1.0, abs=1e-4)           # max-normed
    assert foreground.min() >= 0
    torch.testing.assert_close(activations[:, 0], 1 - foreground.amax(dim=1))
    assert FSL_VARIANT_WEIGHTS == {"multinomial": 0.5, "binomial": 1.0}


@pytest.mark.parametrize("call, message", [
    (lambda s: fsl_activations(s, None, variant="binomial"), "labels"),
    (lambda s: fsl_activations(s, torch.ones(2, 5), variant="binomial"), "labels must be"),
    (lambda s: fsl_activations(s, torch.ones(2, 4), variant="multinomial"), "labels must be"),
    (lambda s: fsl_activations(s[0], None), "scores must be"),
    (lambda s: fsl_activations(s, None, variant="softmax"), "variant"),
])
def test_activation_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(2, 4, 3, 3))


def test_module_fixed_and_learnable():
    activations, image = random_problem(seed=9, dtype=torch.float32)
    fixed = FeatureSimilarityLoss(sigma=2.0, mu=1.0)
    assert list(fixed.parameters()) == []
    assert fixed(activations, image).item() == pytest.approx(
        feature_similarity_loss(activations, image, 2.0, 1.0).item(), rel=1e-6)

    learnable = FeatureSimilarityLoss(sigma=2.0, mu=1.0, learnable=True)
    names = {name for name, _ in learnable.named_parameters()}
    assert names == {"log_sigma", "mu"}
    loss = learnable(activations, image)
    assert loss.item() == pytest.approx(fixed(activations, image).item(), rel=1e-5)
    loss.backward()
    assert learnable.log_sigma.grad.abs() > 0 and learnable.mu.grad.abs() > 0
    with pytest.raises(ValueError, match="sigma must be positive"):
        FeatureSimilarityLoss(sigma=0.0)
