import pytest
import torch

from graphwsss.config import load_config
from graphwsss.data.errors import DataError
from graphwsss.data.voc import VOCDataset
from graphwsss.settings import RunSettings
from graphwsss.stages.affinity import (AffinityTrainingSet, build_affinity_network,
                                       load_affinity_network)
from graphwsss.stages import seeds
from graphwsss.stages.paths import RunContext, RunPaths


def _settings(*overrides):
    return load_config(RunSettings, None, ["backbone.weights=null", "affinity.training.crop_size=64",
                                           *overrides])


@pytest.fixture
def seeded_run(sample_root, tmp_path):
    dataset = VOCDataset(sample_root)
    settings = _settings()
    seeds.run(RunContext(dataset, RunPaths(tmp_path), settings, torch.device("cpu"), False),
              dataset.ids[:2])
    return dataset, settings, tmp_path


def test_training_set_items_are_aligned_on_the_output_grid(seeded_run):
    dataset, settings, root = seeded_run
    network = build_affinity_network(settings.backbone, pretrained=False)
    training_set = AffinityTrainingSet(dataset, dataset.ids[:2], root / "seeds", settings,
                                       network.backbone.pixel_mean, network.backbone.pixel_std,
                                       network.stride)
    item = training_set[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["seeds"].shape == item["valid"].shape == (8, 8)
    assert item["image_grid"].shape == (3, 8, 8)
    assert (item["seeds"][~item["valid"]] == 255).all()
    again = training_set[0]
    assert torch.equal(item["image"], again["image"])
    training_set.set_epoch(1)
    assert not torch.equal(item["image"], training_set[0]["image"])   # new epoch, new draw
    network_features, embedding = network(item["image"][None])
    assert embedding.shape[-2:] == item["seeds"].shape


def test_missing_seeds_are_named(seeded_run):
    dataset, settings, root = seeded_run
    with pytest.raises(DataError, match=dataset.ids[5]):
        AffinityTrainingSet(dataset, dataset.ids[5:7], root / "seeds", settings, (0, 0, 0),
                            (1, 1, 1), 8)


def test_load_affinity_network_round_trip_and_errors(tmp_path):
    settings = _settings()
    network = build_affinity_network(settings.backbone, pretrained=False)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    loaded = load_affinity_network(tmp_path, "cpu", settings.backbone)
    assert torch.equal(loaded.mix.weight, network.mix.weight) and not loaded.training
    torch.save({"model": network.state_dict(), "epoch": 1}, tmp_path / "checkpoint.pt")
    assert torch.equal(load_affinity_network(tmp_path / "checkpoint.pt", "cpu").mix.weight,
                       network.mix.weight)
    with pytest.raises(DataError, match="not found"):
        load_affinity_network(tmp_path / "absent.pt", "cpu")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="broken.pt"):
        load_affinity_network(tmp_path / "broken.pt", "cpu")
    torch.save({"mix.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="do not match"):
        load_affinity_network(tmp_path / "other.pt", "cpu")


def test_run_trains_the_affinity_cnn_and_builds_its_graph(sample_root, tmp_path):
    from graphwsss.stages.run import run
    settings = _settings("limit=2", "graph.builder=affinity", "affinity.training.epochs=1",
                         "affinity.steps=3", "affinity.training.batch_size=2", "propagator.epochs_first=2",
                         "propagator.epochs_second=1", "crf.enabled=false")
    metrics = run(sample_root, tmp_path, settings, show_progress=False)
    assert (tmp_path / "affinity" / "model.pt").is_file()
    assert len(list((tmp_path / "pseudo_labels").glob("*.png"))) == 2
    assert metrics["images"] == 2
    # Another run reuses those weights: nothing is trained, the graphs come from them.
    reuse = _settings("limit=2", "graph.builder=affinity", "propagator.epochs_first=2",
                      "propagator.epochs_second=1", "crf.enabled=false",
                      f"affinity.training.checkpoint={tmp_path / 'affinity' / 'model.pt'}")
    again = run(sample_root, tmp_path / "reuse", reuse, show_progress=False)
    assert again["images"] == 2 and not (tmp_path / "reuse" / "affinity").exists()


def test_cached_training_caches_at_most_cache_images(seeded_run):
    """``affinity.cache_images`` caps the images whose features are held in memory (a seeded
    subset of the run's), so a large data set does not fill the memory."""
    from graphwsss.stages.affinity import train_affinity_cached

    dataset, _, root = seeded_run
    settings = _settings("affinity.cache_images=1", "affinity.steps=1",
                         "affinity.training.batch_size=1")
    train_affinity_cached(dataset, dataset.ids[:2], root / "seeds", root / "aff", settings,
                          torch.device("cpu"), show_progress=False)
    log = __import__("json").loads((root / "aff" / "train_log.json").read_text())
    assert log["cache_entries"] == 2          # one image and its mirror
