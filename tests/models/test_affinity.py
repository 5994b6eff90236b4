import numpy as np
import pytest
import torch

from graphwsss.models.affinity import AffinityNet, concat_levels
from graphwsss.models.registry import build_backbone


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return AffinityNet(build_backbone("efficientnet_lite0", weights=None, output_stride=8))


def test_shapes_and_non_negative_features(network):
    features, embedding = network(torch.randn(2, 3, 40, 56))
    assert features.shape == (2, 40 + 112 + 320, 5, 7)
    assert embedding.shape == (2, 448, 5, 7)
    assert (features >= 0).all()


def test_early_layers_and_classifier_are_frozen(network):
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    assert not any(name.startswith(("backbone._conv_stem", "backbone._blocks.0.",
                                    "backbone._blocks.2.", "backbone._fc", "backbone._conv_head"))
                   for name in trainable)
    assert any(name.startswith("backbone._blocks.15.") for name in trainable)
    assert {"mix.weight", "mix.bias"} <= trainable


def test_batchnorm_statistics_stay_fixed_in_training(network):
    network.train()
    norms = [m for m in network.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert network.reduce_norm[0].training
    network.eval()


def test_embed_one_image(network):
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    network.train()
    features, embedding = network.embed(image)
    assert features.shape == (472, 4, 6) and embedding.shape == (448, 4, 6)
    assert network.training                   # the caller's mode is restored
    network.eval()


def test_concat_levels_resizes_coarser_levels():
    out = concat_levels([torch.ones(1, 2, 4, 4), torch.zeros(1, 3, 2, 2)])
    assert out.shape == (1, 5, 4, 4)


def test_resnet_backbone_works_too():
    network = AffinityNet(build_backbone("resnet50", weights=None, output_stride=8))
    features, embedding = network(torch.randn(1, 3, 32, 32))
    assert features.shape == (1, 512 + 1024 + 2048, 4, 4) and embedding.shape == (1, 448, 4, 4)
    assert not network.backbone.conv1.weight.requires_grad
    assert not network.backbone.layer1[0].conv1.weight.requires_grad
    assert network.backbone.layer2[0].conv1.weight.requires_grad
