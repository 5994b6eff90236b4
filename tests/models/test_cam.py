"""Tests for graphwsss.models.cam (the CAM network of docs/method.md §3)."""

import pytest
import torch
from torch import nn

from graphwsss.losses import FeatureSimilarityLoss
from graphwsss.models.registry import build_backbone
from graphwsss.models.cam import CAMNet


pytestmark = pytest.mark.usefixtures("single_thread")


def network(output_stride=8, **options):
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", weights=None, output_stride=output_stride)
    return CAMNet(backbone, num_classes=3, **options)


def test_logits_and_features_on_the_stride_8_grid():
    net = network(activation="softmax").eval()
    logits, features = net(torch.randn(2, 3, 60, 43))
    assert logits.shape == (2, 4, 8, 6)                        # K + 1, ceil(60/8), ceil(43/8)
    assert features.shape == (2, 320, 8, 6)
    assert net.classifier.bias is None
    sigmoid = network(activation="sigmoid").eval()
    assert sigmoid(torch.randn(1, 3, 64, 64)).logits.shape == (1, 3, 8, 8)


def test_coarser_backbones_are_upsampled_to_the_grid():
    net = network(output_stride=16).eval()
    logits, features = net(torch.randn(1, 3, 64, 48))
    assert logits.shape == (1, 4, 8, 6) and features.shape[-2:] == (8, 6)


def test_freezing_and_batchnorm_in_training():
    net = network()
    stem = [p for name, p in net.named_parameters() if name.startswith("backbone._conv_stem")]
    assert stem and not any(p.requires_grad for p in stem)
    assert net.classifier.weight.requires_grad
    head = [p for name, p in net.named_parameters() if "_fc" in name]
    assert head and not any(p.requires_grad for p in head)    # ImageNet classifier frozen
    net.train()
    batch_norms = [m for m in net.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    free = network(freeze_before_level=None, freeze_batchnorm=False).train()
    assert all(p.requires_grad for name, p in free.named_parameters()
               if name.startswith("backbone._conv_stem"))
    assert any(m.training for m in free.backbone.modules() if isinstance(m, nn.BatchNorm2d))


def test_softmax_class_activations_are_restricted_to_the_tags():
    net = network(activation="softmax")
    logits = torch.randn(2, 4, 3, 3)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    activations = net.class_activations(logits, labels)
    assert activations.shape == (2, 3, 3, 3)
    assert (activations[0, 1] == 0).all() and (activations[1] == 0).all()
    # The present classes and the background share the softmax.
    expected = torch.softmax(logits[0, [0, 1, 3]], dim=0)[1:]
    assert torch.allclose(activations[0, [0, 2]], expected)
    everything = net.class_activations(logits)
    assert torch.allclose(everything, torch.softmax(logits, 1)[:, 1:])


def test_linear_classifier_is_the_1x1_convolution():
    net = network().eval()
    images = torch.randn(1, 3, 32, 32)
    logits, features = net(images)
    assert torch.allclose(logits, net.classifier(features), atol=1e-5)


def test_sigmoid_class_activations_are_relu_of_the_logits():
    net = network(activation="sigmoid")
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[0.0, 1.0, 1.0]])
    activations = net.class_activations(logits, labels)
    assert torch.equal(activations[0, 0], torch.zeros(2, 2))
    assert torch.equal(activations[0, 1:], torch.relu(logits[0, 1:]))
    with pytest.raises(ValueError, match="labels must be"):
        net.class_activations(logits, labels[:, :2])
    with pytest.raises(ValueError, match="logits must be"):
        net.class_activations(torch.randn(1, 4, 2, 2))


def test_cosine_classifier_is_scaled_cosine_for_maps_and_vectors():
    net = network(classifier="cosine").eval()
    features = torch.randn(2, 320, 3, 4)
    maps = net.classify(features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert maps.abs().max() <= 20.0 + 1e-4
    weight = net.classifier_weight()
    expected = 20.0 * torch.cosine_similarity(features[0, :, 1, 2], weight[2], dim=0)
    assert maps[0, 2, 1, 2].item() == pytest.approx(expected.item(), rel=1e-5)


def test_learnable_fsl_parameters_live_in_the_network():
    net = network(fsl=FeatureSimilarityLoss(learnable=True))
    names = [name for name, _ in net.named_parameters()]
    assert "fsl.log_sigma" in names and "fsl.mu" in names
    assert {id(p) for p in net.head_parameters()} == {
        id(net.classifier.weight), id(net.fsl.log_sigma), id(net.fsl.mu)}


def test_argument_errors():
    backbone = build_backbone("efficientnet_lite0", weights=None)
    with pytest.raises(ValueError, match="num_classes"):
        CAMNet(backbone, 0)
    with pytest.raises(ValueError, match="activation"):
        CAMNet(backbone, 2, activation="tanh")
    with pytest.raises(ValueError, match="classifier"):
        CAMNet(backbone, 2, classifier="mlp")
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        CAMNet(backbone, 2)(torch.randn(3, 16, 16))
