"""Tests for graphwsss.stages.cam: CAM training set, training, inference and CAM seeds."""

import json

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from graphwsss.config import load_config
from graphwsss.data.errors import DataError
from graphwsss.data.records import Box
from graphwsss.data.voc import VOCDataset
from graphwsss.settings import RunSettings
from graphwsss.stages.cam import (CAMObjective, CAMTrainingSet, box_coverage, build_cam_network,
                                  cam_path, cam_seeds, compute_cams, confident_cam_seeds,
                                  crf_cam_seeds, infer_cams, load_cam_network, read_cams,
                                  same_tags_warning, train_cam, write_cams)


pytestmark = pytest.mark.usefixtures("single_thread")


def _settings(*overrides):
    return load_config(RunSettings, None, ["backbone.weights=null", "cam.training.crop_size=64",
                                           "cam.training.batch_size=2", "cam.training.epochs=1",
                                           "cam.inference_scales=[1.0]", *overrides])


def _training_set(dataset, settings, ids, boxes=False):
    network = build_cam_network(settings, dataset.num_classes - 1, pretrained=False)
    backbone = network.backbone
    return network, CAMTrainingSet(dataset, ids, settings, backbone.pixel_mean,
                                   backbone.pixel_std, network.stride, boxes=boxes)


# --------------------------------------------------------------------------------------------
# Training set and objective
# --------------------------------------------------------------------------------------------

def test_training_items_carry_tags_and_grid_tensors(sample_root):
    dataset = VOCDataset(sample_root)
    _, training_set = _training_set(dataset, _settings(), ["6_15_s", "1_27_s"])
    item = training_set[0]
    assert item["image"].shape == (3, 64, 64)
    assert item["labels"].shape == (16,)
    assert torch.nonzero(item["labels"]).flatten().tolist() == [4, 10, 14]   # ids 5, 11, 15
    assert item["image_grid"].shape == (3, 8, 8) and item["valid"].shape == (8, 8)
    assert 0.0 <= item["image_grid"].min() and item["image_grid"].max() <= 1.0
    assert torch.equal(training_set[0]["image"], item["image"])
    training_set.set_epoch(1)
    assert not torch.equal(training_set[0]["image"], item["image"])


def test_box_coverage_encodes_overlapping_boxes():
    boxes = [Box(0, 0, 4, 3, 1), Box(2, 1, 6, 5, 2)]
    codes, membership = box_coverage(boxes, 6, 7)
    assert codes.dtype == np.uint8 and codes.shape == (6, 7) and codes.max() < 255
    inside = membership[codes]                                  # [H, W, M]
    expected = np.zeros((6, 7, 2), dtype=bool)
    expected[0:3, 0:4, 0] = True
    expected[1:5, 2:6, 1] = True
    assert np.array_equal(inside, expected)
    codes, membership = box_coverage([], 3, 3)
    assert membership.shape[1] == 0 and (codes == 0).all()


def test_bap_items_move_the_boxes_with_the_image(sample_root):
    dataset = VOCDataset(sample_root)
    # No rescale, flip or jitter and a crop as large as the image: boxes stay where they are.
    settings = _settings("cam.pooling=bap", "cam.fsl=none", "cam.training.crop_size=320",
                         "cam.training.scale_range=[1.0, 1.0]", "cam.training.flip=false",
                         "cam.training.color_jitter=0.0")
    _, training_set = _training_set(dataset, settings, ["10_10_s", "1_11_s"], boxes=True)
    assert training_set.max_boxes == 3
    item = training_set[0]                                       # 10_10_s: 2 boxes of class 8
    assert item["box_masks"].shape == (3, 40, 40)
    assert item["box_classes"].tolist() == [8, 8, 0]
    sample = dataset.load("10_10_s")
    # The 213 image rows are padded into the 320 crop (27 of 40 grid rows hold their centres).
    assert int(item["valid"].any(1).sum()) in (26, 27, 28)
    total_box = item["box_masks"][:2].sum().item() * 64            # cells of 8x8 pixels
    areas = sum(box.area for box in sample.boxes)
    assert total_box == pytest.approx(areas, rel=1e-4)
    assert item["box_masks"][2].sum() == 0
    background = item["background"].sum().item() * 64
    assert background == pytest.approx(213 * 320 - areas, rel=1e-4)


@pytest.mark.parametrize("pooling,fsl", [("gap", "binomial"), ("gmp", "none"),
                                         ("is_binomial", "none"), ("bap", "multinomial")])
def test_objective_of_every_pooling_backpropagates(sample_root, pooling, fsl):
    dataset = VOCDataset(sample_root)
    settings = _settings(f"cam.pooling={pooling}", f"cam.fsl={fsl}", "cam.training.crop_size=32")
    network, training_set = _training_set(dataset, settings, ["6_15_s", "10_10_s"],
                                          boxes=pooling == "bap")
    batch = default_collate([training_set[0], training_set[1]])
    network.train()
    loss, logs = CAMObjective(network, settings)(network, batch)
    assert torch.isfinite(loss) and "classification" in logs
    assert ("fsl" in logs) == (fsl != "none")
    loss.backward()
    assert network.classifier.weight.grad.abs().sum() > 0


def test_mismatched_fsl_is_refused():
    with pytest.raises(ValueError, match="cam.fsl=binomial"):
        build_cam_network(_settings("cam.pooling=gap", "cam.fsl=multinomial"), 3, False)


# --------------------------------------------------------------------------------------------
# Training and inference
# --------------------------------------------------------------------------------------------

def test_train_one_epoch_then_infer_cams(sample_root, tmp_path):
    dataset = VOCDataset(sample_root)
    settings = _settings()
    ids = ["6_15_s", "1_27_s"]
    network = train_cam(dataset, ids, tmp_path / "cam", settings, torch.device("cpu"),
                        show_progress=False)
    assert (tmp_path / "cam" / "model.pt").is_file()
    log = json.loads((tmp_path / "cam" / "train_log.json").read_text())
    assert log[0]["epoch"] == 1 and "fsl" in log[0] and "sampled" in log[0]

    folder = infer_cams(network, dataset, ids, tmp_path, settings, torch.device("cpu"),
                        show_progress=False)
    assert folder == tmp_path / "cams"
    for image_id in ids:
        raw = np.load(cam_path(tmp_path, image_id))
        sample = dataset.load(image_id)
        assert raw.dtype == np.float16 and raw.shape == (16, sample.height, sample.width)
        assert raw.min() >= 0.0 and raw.max() <= 1.0
        absent = [k for k in range(16) if k + 1 not in sample.tags]
        assert not raw[absent].any()
        for class_id in sample.tags:
            assert raw[class_id - 1].max() > 0.99                # max-normalised per class
    # Resumable: existing files are kept.
    stamp = cam_path(tmp_path, ids[0]).stat().st_mtime_ns
    infer_cams(network, dataset, ids, tmp_path, settings, torch.device("cpu"), show_progress=False)
    assert cam_path(tmp_path, ids[0]).stat().st_mtime_ns == stamp

    # The trained weights load back, and a rerun of training loads them instead of training.
    loaded = load_cam_network(tmp_path / "cam", "cpu", settings, 16)
    assert torch.equal(loaded.classifier.weight, network.classifier.weight)
    again = train_cam(dataset, ids, tmp_path / "cam", settings, torch.device("cpu"),
                      show_progress=False)
    assert torch.equal(again.classifier.weight, network.classifier.weight)


def test_same_tags_on_every_image_are_named():
    names = ["background", "cow", "sheep"]
    warning = same_tags_warning([(1,), (1,), (1,)], names)
    assert "all" not in warning and "3 training images" in warning and "(cow)" in warning
    assert same_tags_warning([(2, 1), (1, 2)], names) is not None     # order does not matter
    assert same_tags_warning([(1,), (1, 2)], names) is None
    assert same_tags_warning([(1,)], names) is None                   # one image: nothing to say


def test_training_warns_when_every_image_has_the_same_tags(sample_root, tmp_path, caplog,
                                                           monkeypatch):
    import graphwsss.stages.cam as cam_stage

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(cam_stage, "build_cam_network", stop)
    dataset = VOCDataset(sample_root)
    with caplog.at_level("WARNING"), pytest.raises(RuntimeError, match="stopped"):
        train_cam(dataset, ["6_15_s", "6_15_s"], tmp_path / "cam", _settings(),
                  torch.device("cpu"), show_progress=False)
    assert "same tags" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"), pytest.raises(RuntimeError, match="stopped"):
        train_cam(dataset, ["6_15_s", "1_27_s"], tmp_path / "cam", _settings(),
                  torch.device("cpu"), show_progress=False)
    assert "same tags" not in caplog.text


def test_compute_cams_with_flip_and_scales_stays_in_range(sample_root):
    dataset = VOCDataset(sample_root)
    network = build_cam_network(_settings("cam.pooling=gap", "cam.fsl=none"), 16, False)
    sample = dataset.load("19_11_s")
    cams = compute_cams(network, sample.image, sample.tags, scales=(0.5, 0.75), flip=True)
    assert cams.shape == (16, 240, 320) and cams.dtype == torch.float32
    assert cams.min() >= 0 and cams.max() <= 1
    assert not cams[[k - 1 for k in range(1, 17) if k not in sample.tags]].any()
    with pytest.raises(ValueError, match="scales"):
        compute_cams(network, sample.image, sample.tags, scales=())


def test_load_cam_network_errors(tmp_path):
    settings = _settings()
    with pytest.raises(DataError, match="not found"):
        load_cam_network(tmp_path / "absent.pt", "cpu", settings, 16)
    (tmp_path / "broken.pt").write_bytes(b"no")
    with pytest.raises(DataError, match="broken.pt"):
        load_cam_network(tmp_path / "broken.pt", "cpu", settings, 16)
    torch.save({"classifier.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="do not match"):
        load_cam_network(tmp_path / "other.pt", "cpu", settings, 16)


def test_read_cams_checks_the_file(tmp_path):
    path = write_cams(tmp_path / "a.npy", np.full((3, 4, 5), 0.5, dtype=np.float32))
    assert read_cams(path, 3, (4, 5)).dtype == np.float32
    with pytest.raises(DataError, match="a.npy.*K = 2"):
        read_cams(path, 2)
    with pytest.raises(DataError, match="a.npy.*image is 6x4"):
        read_cams(path, 3, (4, 6))
    np.save(tmp_path / "b.npy", np.full((3, 4, 5), 1.5, dtype=np.float16))
    with pytest.raises(DataError, match="b.npy.*\\[0, 1\\]"):
        read_cams(tmp_path / "b.npy", 3)
    with pytest.raises(DataError, match="missing"):
        read_cams(tmp_path / "c.npy", 3)


# --------------------------------------------------------------------------------------------
# CAM -> seeds
# --------------------------------------------------------------------------------------------

def toy_cams():
    cams = np.zeros((3, 4, 5), dtype=np.float32)
    cams[0, :, :2] = [0.9, 0.6]                 # class 1 on the left
    cams[2, :, 3:] = [0.7, 0.3]                 # class 3 on the right
    cams[2, 0, 2] = 0.02                        # a faint pixel in the middle column
    return cams


def test_cam_seeds_threshold_the_background():
    seeds = cam_seeds(toy_cams(), threshold=0.5)
    expected = np.array([[1, 1, 0, 3, 0]] * 4, dtype=np.uint8)
    assert np.array_equal(seeds, expected)
    assert np.array_equal(cam_seeds(toy_cams(), 0.0)[:, 2], [3, 1, 1, 1])   # argmax of zeros: 1


def test_confident_cam_seeds_keep_each_class_top_fraction_and_low_background():
    seeds = confident_cam_seeds(toy_cams(), fraction=0.5, background_threshold=0.05)
    # Column 2 is below 0.05 everywhere: background. Each class keeps its 4 strongest of 8.
    expected = np.array([[1, 255, 0, 3, 255]] * 4, dtype=np.uint8)
    assert np.array_equal(seeds, expected)
    assert (confident_cam_seeds(np.zeros((3, 2, 2), np.float32)) == 0).all()


def test_crf_cam_seeds_follow_the_image():
    image = np.full((40, 40, 3), 30, dtype=np.uint8)
    image[10:30, 10:30] = 220                                   # a bright square
    cams = np.zeros((2, 40, 40), dtype=np.float32)
    cams[1, 12:28, 12:28] = 1.0                                 # the CAM covers its middle
    cams[1, 8:32, 8:32] = np.maximum(cams[1, 8:32, 8:32], 0.35)  # and blurs across its edge
    seeds = crf_cam_seeds(image, cams, threshold=0.3)
    assert seeds.dtype == np.uint8 and set(np.unique(seeds)) <= {0, 2}
    truth = np.zeros((40, 40), dtype=np.uint8)
    truth[10:30, 10:30] = 2
    assert (seeds == truth).mean() > (cam_seeds(cams, 0.3) == truth).mean()
    assert (seeds == truth).mean() > 0.97
    with pytest.raises(ValueError, match="does not match"):
        crf_cam_seeds(image[:20], cams, 0.3)


def test_fsl_window_and_normalization_settings_reach_the_loss():
    fsl = build_cam_network(_settings(), 3, False).fsl
    assert (fsl.window, fsl.normalization) == (None, "pixels")        # defaults: ceil(3σ), hw
    fsl = build_cam_network(_settings("cam.fsl_window=2", "cam.fsl_normalization=pairs"), 3,
                            False).fsl
    assert (fsl.window, fsl.normalization) == (2, "pairs")
