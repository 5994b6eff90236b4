import numpy as np
import pytest
import torch

from graphwsss.config import load_config
from graphwsss.models.affinity import EdgeAffinityNet
from graphwsss.models.registry import build_backbone
from graphwsss.settings import RunSettings
from graphwsss.stages.affinity import load_affinity_network, train_cached_head
from graphwsss.training.feature_cache import FeatureCache


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return EdgeAffinityNet(build_backbone("efficientnet_lite0", weights=None, output_stride=8))


def _two_region_image(height=37, width=52):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 40, 40)
    image[:, width // 2:] = (30, 60, 220)
    seeds = np.zeros((height, width), np.uint8)
    seeds[:, width // 2:] = 1
    seeds[:, width // 2 - 4: width // 2 + 4] = 255
    return image, seeds


def test_cache_shapes_and_flip(network):
    image, seeds = _two_region_image(37, 56)
    seeds[:8, :8] = 2                                  # an asymmetric marker
    cache = FeatureCache(network.backbone, network.stride).fill([("a", image, seeds)])
    assert len(cache) == 2
    plain, mirrored = cache.entries
    assert not plain.flipped and mirrored.flipped
    grid = (5, 7)                                      # ceil(37 / 8), 56 / 8
    assert plain.grid == grid and plain.image_grid.shape == (3, *grid)
    assert [tuple(level.shape) for level in plain.levels] == [
        (16, 20, 28), (24, 10, 14), (40, 5, 7), (112, 5, 7), (320, 5, 7)]
    assert plain.colour.shape == (6, 20, 28)
    assert all(level.dtype == torch.float16 for level in plain.levels)
    assert plain.seeds[0, 0] == 2 and mirrored.seeds[0, -1] == 2
    assert torch.equal(mirrored.seeds, plain.seeds.flip(-1))
    # The cache holds exactly what the network's own forward pass feeds its head.
    _, embedding = network.embed(image)
    cached = network.head([level[None].float() for level in plain.levels],
                          plain.colour[None].float(), plain.image_grid[None].float())[0]
    assert embedding.shape == (network.embedding_dim, *grid)
    assert torch.allclose(cached, embedding, atol=0.05 * embedding.abs().max().item() + 1e-3)
    batch = cache.batch(3, 6, torch.Generator().manual_seed(0))
    assert batch["seeds"].shape == batch["valid"].shape == (3, 6, 6)
    assert batch["levels"][0].shape == (3, 16, 24, 24) and batch["colour"].shape == (3, 6, 24, 24)
    assert (batch["seeds"][~batch["valid"]] == 255).all() and not batch["valid"][:, 5].any()


def test_cached_training_lowers_the_loss_and_round_trips(network, tmp_path):
    image, seeds = _two_region_image(64, 64)
    cache = FeatureCache(network.backbone, network.stride).fill([("a", image, seeds)])
    settings = load_config(RunSettings, None, ["affinity.steps=30", "affinity.adam_lr=0.01",
                                               "affinity.training.batch_size=2",
                                               "affinity.training.crop_size=64"])
    history = train_cached_head(network, cache, settings, torch.device("cpu"), log_every=10)
    assert len(history) == 3
    assert history[-1]["classification"] < 0.5 * history[0]["classification"]
    torch.save(network.state_dict(), tmp_path / "model.pt")
    loaded = load_affinity_network(tmp_path, "cpu")
    assert isinstance(loaded, EdgeAffinityNet) and not loaded.training
    features, embedding = loaded.embed(image)
    assert features.shape == (472, 8, 8) and embedding.shape == (448, 8, 8)
    assert torch.allclose(embedding, network.embed(image)[1])
