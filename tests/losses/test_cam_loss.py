"""Tests for graphwsss.losses.cam_loss (the CAM network's loss object, docs/method.md §3)."""

import pytest
import torch

from graphwsss.losses import CAMLoss, FeatureSimilarityLoss
from graphwsss.losses.global_pooling import gap_loss, gmp_loss
from graphwsss.losses.importance_sampling import importance_sampling_loss
from graphwsss.settings import CAMSettings

from .cam_cases import random_logits

pytestmark = pytest.mark.usefixtures("single_thread")


def test_cam_loss_dispatches_and_adds_the_weighted_fsl():
    logits = random_logits(channels=4)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    image = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    assert CAMLoss("gap", 3)(logits[:, 1:], labels)[0].item() == pytest.approx(
        gap_loss(logits[:, 1:], labels).item())
    assert CAMLoss("gmp", 3)(logits, labels)[0].item() == pytest.approx(
        gmp_loss(logits, labels).item())
    loss, logs = CAMLoss("is", 3)(logits, labels, generator=torch.Generator().manual_seed(0))
    direct, _ = importance_sampling_loss(logits, labels, 0.8, 100,
                                         torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(direct.item())
    fsl = FeatureSimilarityLoss(sigma=1.0, normalization="pixels")
    with_fsl, logs = CAMLoss("gmp", 3, fsl=fsl, fsl_variant="multinomial")(logits, labels,
                                                                            image=image)
    expected = fsl(torch.softmax(logits, 1), image)
    assert logs["fsl"] == pytest.approx(expected.item(), rel=1e-5)
    assert with_fsl.item() == pytest.approx(logs["classification"] + 0.5 * logs["fsl"], rel=1e-5)
    binomial, logs = CAMLoss("is_binomial", 3, fsl=fsl, fsl_variant="binomial", fsl_weight=2.0)(
        logits[:, 1:], labels, image=image, generator=torch.Generator().manual_seed(0))
    assert binomial.item() == pytest.approx(logs["classification"] + 2.0 * logs["fsl"], rel=1e-5)


def test_from_settings_resolves_the_defaults_of_each_pooling():
    loss = CAMLoss.from_settings(CAMSettings(pooling="is", fsl="none"), 3)
    assert (loss.is_lambda, loss.is_samples, loss.channels) == (0.8, 100, 4)
    loss = CAMLoss.from_settings(CAMSettings(pooling="is_binomial", fsl="binomial"), 3,
                                 fsl=FeatureSimilarityLoss(sigma=1.0))
    assert (loss.is_lambda, loss.is_samples, loss.fsl_weight, loss.channels) == (0.2, 10, 1.0, 3)
    loss = CAMLoss.from_settings(CAMSettings(pooling="bap", is_lambda=0.5, bap_grid=2,
                                             fsl_weight=0.25), 5)
    assert (loss.bap_grid, loss.fsl_weight, loss.fsl_variant, loss.channels) == (2, 0.25,
                                                                                 "multinomial", 6)


def test_cam_loss_errors_name_the_problem():
    logits = random_logits(channels=4)
    labels = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="needs 3 logit channels"):
        CAMLoss("gap", 3)(logits, labels)                     # 4 sigmoid logits, 3 tags
    with pytest.raises(ValueError, match="labels must be"):
        CAMLoss("gmp", 3)(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pooling must be"):
        CAMLoss("mean", 3)
    fsl = FeatureSimilarityLoss(sigma=1.0)
    with pytest.raises(ValueError, match="binomial FSL does not fit"):
        CAMLoss("is", 3, fsl=fsl, fsl_variant="binomial")
    with pytest.raises(ValueError, match="needs the image"):
        CAMLoss("is", 3, fsl=fsl, fsl_variant="multinomial")(logits, labels)
    with pytest.raises(ValueError, match="bap"):
        CAMLoss("bap", 3)(logits, labels)
