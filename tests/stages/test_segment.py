"""The segmenter stage (docs/method.md §9): train-segmenter, predict, refinement rounds."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from graphwsss.cli import main
from graphwsss.data import VOCDataset, read_label_png
from graphwsss.settings import RunSettings
from graphwsss.stages.segment import LabelSource

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["segmenter.training.epochs=1", "segmenter.training.batch_size=2",
        "segmenter.training.crop_size=64", "segmenter.inference_scales=[1.0]", "device=cpu"]
FAST_RUN = ["propagator.epochs_first=2", "propagator.epochs_second=2", "crf.iterations=2"]


@pytest.fixture(scope="module")
def rounds_run(tmp_path_factory, sample_root):
    """A two-image box run with one refinement round (pre-CRF labels kept: crf.enabled=false)."""
    out = tmp_path_factory.mktemp("segment") / "run"
    assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(out),
                 "limit=2", *FAST_RUN, *TINY, "segmenter.rounds=1", "crf.enabled=false"]) == 0
    return out


def test_rounds_record_each_rounds_miou_and_replace_the_labels(rounds_run, sample_root):
    metrics = json.loads((rounds_run / "metrics.json").read_text())
    assert [entry["round"] for entry in metrics["rounds"]] == [0, 1]
    assert all(0 <= entry["miou"] <= 100 for entry in metrics["rounds"])
    assert metrics["rounds"][1]["miou"] == pytest.approx(metrics["miou"])
    assert (rounds_run / "segmenter" / "round_1" / "model.pt").is_file()
    dataset = VOCDataset(sample_root)
    for image_id in dataset.ids[:2]:
        label = read_label_png(rounds_run / "pseudo_labels" / f"{image_id}.png")
        round1 = read_label_png(rounds_run / "segmenter" / "round_1" / "pseudo_labels"
                                / f"{image_id}.png")
        assert np.array_equal(label, round1)
        assert (rounds_run / "segmenter" / "round_0" / "pseudo_labels" / f"{image_id}.png").is_file()
        assert set(np.unique(label)) <= {0, *dataset.load(image_id).tags}


def test_second_estimate_is_the_pre_crf_argmax(rounds_run, sample_root):
    """Y' from probabilities/ equals what refine writes without CRF (round 0)."""
    dataset = VOCDataset(sample_root)
    source = LabelSource.open(rounds_run, dataset.num_classes)
    assert source.probabilities is not None and source.supervision == "box"
    for image_id in dataset.ids[:2]:
        sample = dataset.load(image_id)
        round0 = read_label_png(rounds_run / "segmenter" / "round_0" / "pseudo_labels"
                                / f"{image_id}.png")
        assert np.array_equal(source.second(sample), round0)


def test_train_on_a_run_with_nal_then_predict(rounds_run, sample_root, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["train-segmenter", "--data", str(sample_root), "--labels", str(rounds_run),
                 "--out", str(model_dir), *TINY, "segmenter.loss=nal"]) == 0
    value = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
    assert value["classes"] == VOCDataset(sample_root).class_names
    assert value["backbone"]["name"] == "efficientnet_lite0"
    log = json.loads((model_dir / "training" / "train_log.json").read_text())
    assert "wce" in log[0] and "unreliable" in log[0]


def test_folder_labels_train_and_predict_skips_a_corrupt_image(sample_root, tmp_path, capsys,
                                                              caplog):
    model_dir = tmp_path / "model"
    with caplog.at_level(logging.WARNING):
        assert main(["train-segmenter", "--data", str(sample_root), "--labels",
                     str(sample_root / "SegmentationClass"), "--out", str(model_dir), "limit=2",
                     "backbone.weights=null", *TINY]) == 0
    assert "loss is cross-entropy" in caplog.text      # nal without Y': CE, with a warning
    images = tmp_path / "images"
    images.mkdir()
    ids = VOCDataset(sample_root).ids[:2]
    for image_id in ids:
        (images / f"{image_id}.jpg").write_bytes(
            (sample_root / "JPEGImages" / f"{image_id}.jpg").read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    (images / "notes.txt").write_text("ignored")
    pred = tmp_path / "pred"
    code = main(["predict", "--model", str(model_dir / "model.pt"), "--images", str(images),
                 "--out", str(pred), "--crf", "--data", str(sample_root),
                 "segmenter.inference_scales=[0.5,1.0]", "crf.iterations=2", "device=cpu"])
    assert code == 1
    assert "broken.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in pred.iterdir()) == sorted(f"{i}.png" for i in ids)
    for image_id in ids:
        sample = VOCDataset(sample_root).load(image_id)
        label = read_label_png(pred / f"{image_id}.png")
        assert label.shape == (sample.height, sample.width)
        assert set(np.unique(label)) <= {0, *sample.tags}      # restricted to the boxes


def test_predict_refuses_a_file_that_is_not_a_segmenter(tmp_path, capsys):
    torch.save({"weight": torch.zeros(1)}, tmp_path / "model.pt")
    (tmp_path / "images").mkdir()
    assert main(["predict", "--model", str(tmp_path / "model.pt"), "--images",
                 str(tmp_path / "images"), "--out", str(tmp_path / "pred")]) == 2
    assert "not a segmenter model" in capsys.readouterr().err


def test_segmenter_settings_default_to_the_method():
    settings = RunSettings().segmenter
    assert (settings.loss, settings.tau, settings.nal_gamma, settings.nal_lambda,
            settings.rounds) == ("nal", 20.0, 7.0, 0.1, 0)
    assert settings.training.weight_decay == 5e-4 and settings.training.scale_range == (0.5, 1.5)


def test_split_script_writes_lists_into_a_linked_copy(sample_root, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "segmenter_split.py"
    out = tmp_path / "split"
    subprocess.run([sys.executable, str(script), str(sample_root), str(out), "--train", "8"],
                   check=True, capture_output=True)
    ids = VOCDataset(sample_root).ids
    assert VOCDataset(out, split="train").ids == ids[:8]
    assert VOCDataset(out, split="val").ids == ids[8:]
    assert (out / "JPEGImages").is_symlink()
    every = tmp_path / "every"
    subprocess.run([sys.executable, str(script), str(sample_root), str(every), "--every", "5"],
                   check=True, capture_output=True)
    assert VOCDataset(every, split="val").ids == ids[::5]
    assert set(VOCDataset(every, split="train").ids) == set(ids) - set(ids[::5])
    assert sorted(path.stem for path in (every / "val_images").iterdir()) == sorted(ids[::5])


def test_nal_on_a_scribble_run_reads_the_scribbles(rounds_run, sample_root, tmp_path):
    """Y' of a scribble run is restricted to the scribbles' classes: train-segmenter loads the
    images with the run's supervision, whatever its own settings say."""
    run = tmp_path / "scribble_run"
    shutil.copytree(rounds_run, run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("supervision: box", "supervision: scribble"))
    assert LabelSource.open(run, VOCDataset(sample_root).num_classes).supervision == "scribble"
    model_dir = tmp_path / "model"
    assert main(["train-segmenter", "--data", str(sample_root), "--labels", str(run),
                 "--out", str(model_dir), *TINY, "segmenter.loss=nal", "limit=2"]) == 0
    assert "supervision: scribble" in (model_dir / "config.yaml").read_text()
