"""End-to-end ``graphwsss run`` on the bundled sample: outputs, resume, torchrun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from graphwsss.cli import main
from graphwsss.config import load_config
from graphwsss.data import VOCDataset, read_label_png
from graphwsss.settings import RunSettings

FAST = ["propagator.epochs_first=4", "propagator.epochs_second=4", "device=cpu"]


def _run(sample_root, out, *overrides):
    return main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(out),
                 *FAST, *overrides])


def test_run_writes_every_output_and_resumes(tmp_path, sample_root, caplog):
    out = tmp_path / "run"
    assert _run(sample_root, out, "limit=3") == 0
    ids = VOCDataset(sample_root).ids[:3]
    for image_id in ids:
        label = read_label_png(out / "pseudo_labels" / f"{image_id}.png")
        sample = VOCDataset(sample_root).load(image_id)
        assert label.shape == (sample.height, sample.width)
        # Box runs clear every class outside its own boxes.
        allowed = {0, *sample.tags}
        assert set(np.unique(label)) <= allowed
        assert (out / "instances" / f"{image_id}.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "per_class_iou", "contour_f", "seed_precision", "seed_coverage",
                "images", "seconds"):
        assert key in metrics
    assert metrics["images"] == 3 and 0 < metrics["miou"] <= 100
    coco = json.loads((out / "instances" / "instances.json").read_text())
    assert coco and {"image_id", "category_id", "segmentation", "bbox"} <= set(coco[0])
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3 * 4  # image, seeds, label, truth
    resolved = load_config(RunSettings, out / "config.yaml")
    assert resolved.limit == 3 and resolved.propagator.epochs_first == 4

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "pseudo_labels").iterdir()}
    caplog.clear()
    assert _run(sample_root, out, "limit=4") == 0
    assert "propagation: 1 images (3 already done)" in caplog.text
    for name, stamp in stamps.items():
        assert (out / "pseudo_labels" / name).stat().st_mtime_ns == stamp
    assert json.loads((out / "metrics.json").read_text())["images"] == 4


def test_run_rejects_unknown_setting(tmp_path, sample_root, capsys):
    assert _run(sample_root, tmp_path / "run", "graph.bilder=rgbxy") == 2
    assert "unknown setting(s) graph.bilder" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_cpu_processes_split_images(tmp_path, sample_root):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29531", "-m", "graphwsss", "run", "--data", str(sample_root),
               "--supervision", "box", "--out", str(out), *FAST, "limit=4", "crf.enabled=false"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 4
    assert len(list((out / "pseudo_labels").glob("*.png"))) == 4


def test_resume_with_other_settings_warns(tmp_path, sample_root, caplog):
    out = tmp_path / "run"
    assert _run(sample_root, out, "limit=1", "crf.enabled=false") == 0
    caplog.clear()
    assert _run(sample_root, out, "limit=1", "crf.enabled=false") == 0
    assert "differ from the earlier run" not in caplog.text
    assert _run(sample_root, out, "limit=1", "crf.enabled=true", "propagator.name=none") == 0
    assert "settings crf, propagator differ from the earlier run" in caplog.text


SPARSE_FAST = ["limit=2", "cam.training.epochs=1", "cam.training.batch_size=2",
               "cam.training.crop_size=64", "cam.inference_scales=[1.0]",
               "cam.inference_flip=false", "crf.enabled=false", "propagator.epochs_first=2",
               "propagator.epochs_second=1", "device=cpu"]


@pytest.mark.parametrize("supervision", ["scribble", "point", "image"])
def test_runs_from_scribbles_points_and_tags(tmp_path, sample_root, supervision):
    out = tmp_path / supervision
    assert main(["run", "--data", str(sample_root), "--supervision", supervision, "--out",
                 str(out), *SPARSE_FAST]) == 0
    settings = load_config(RunSettings, None, [], defaults=None)
    written = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert written["supervision"] == supervision
    assert written["propagator"]["reg_weight"] == 0.3 and not written["propagator"]["multi_point"]
    assert settings.propagator.reg_weight == 0.01           # box defaults untouched
    dataset = VOCDataset(sample_root)
    for image_id in dataset.ids[:2]:
        sample = dataset.load(image_id)
        assert (out / "cams" / f"{image_id}.npy").is_file()
        label = read_label_png(out / "pseudo_labels" / f"{image_id}.png")
        named = {
            "scribble": set(np.unique(sample.scribble).tolist()) - {255},
            "point": {point.class_id for point in sample.points},
            "image": set(sample.tags),
        }[supervision]
        assert set(np.unique(label).tolist()) <= named | {0}
        if supervision != "image":
            assert (out / "affinity_seeds" / f"{image_id}.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2


def test_scribble_run_without_scribbles_names_the_image(tmp_path, sample_copy, capsys):
    first = VOCDataset(sample_copy).ids[0]
    (sample_copy / "SegmentationScribble" / f"{first}.png").unlink()
    assert main(["run", "--data", str(sample_copy), "--supervision", "scribble", "--out",
                 str(tmp_path / "run"), *SPARSE_FAST]) == 2
    message = capsys.readouterr().err
    assert first in message and "no scribble" in message


def test_point_run_trains_the_affinity_cnn_on_the_cam_seeds(tmp_path, sample_root, monkeypatch):
    """§2: for points the affinity CNN learns from M'_I (``affinity_seeds/``), not from M_g."""
    import graphwsss.stages.run as run_module
    used = {}
    original = run_module.train_affinity

    def spy(dataset, image_ids, seed_dir, *args, **kwargs):
        used["seed_dir"] = seed_dir
        return original(dataset, image_ids, seed_dir, *args, **kwargs)

    monkeypatch.setattr(run_module, "train_affinity", spy)
    out = tmp_path / "point"
    assert main(["run", "--data", str(sample_root), "--supervision", "point", "--out", str(out),
                 *SPARSE_FAST, "graph.builder=affinity", "affinity.training.epochs=1",
                 "affinity.training.batch_size=2", "affinity.training.crop_size=64"]) == 0
    assert used["seed_dir"] == out / "affinity_seeds"
    assert (out / "affinity" / "model.pt").is_file()


def test_box_seeds_fuse_with_cams_when_given(sample_root):
    """§2, 3.4–3.5: with CAMs a box keeps GrabCut's foreground only where the CAM agrees; a box
    whose class the CAM misses keeps its GrabCut seeds; outside the boxes nothing changes."""
    from graphwsss.stages.run import make_seeds
    settings = load_config(RunSettings, None, ["seeds.cam_fusion=true"])
    sample = VOCDataset(sample_root).load(VOCDataset(sample_root).ids[0])
    grabcut, _ = make_seeds(sample, settings)
    box = sample.boxes[0]
    cams = np.zeros((VOCDataset(sample_root).num_classes - 1, sample.height, sample.width),
                    np.float32)
    rows = slice(box.y0, (box.y0 + box.y1) // 2)      # the CAM covers the box's upper half only
    cams[box.class_id - 1, rows, box.x0:box.x1] = 1.0
    fused, affinity = make_seeds(sample, settings, cams)
    assert fused is affinity
    inside = np.zeros(fused.shape, bool)
    for other in sample.boxes:
        inside[other.slices()] = True
    assert np.array_equal(fused[~inside], grabcut[~inside])
    assert ((fused == grabcut) | (fused == 255)).all()
    own = np.zeros(fused.shape, bool)
    own[box.slices()] = True
    lower = own.copy()
    lower[rows] = False
    assert not (fused[lower & ~_other_boxes(sample, box)] == box.class_id).any()
    assert (fused[own] == box.class_id).any()

    missed = make_seeds(sample, settings, np.zeros_like(cams))[0]   # CAM misses every class
    assert np.array_equal(missed, grabcut)


def _other_boxes(sample, box):
    covered = np.zeros((sample.height, sample.width), bool)
    for other in sample.boxes:
        if other is not box:
            covered[other.slices()] = True
    return covered


def test_box_run_with_cam_fusion_trains_cams(tmp_path, sample_root):
    out = tmp_path / "box_cam"
    assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(out),
                 *SPARSE_FAST, "seeds.cam_fusion=true"]) == 0
    dataset = VOCDataset(sample_root)
    for image_id in dataset.ids[:2]:
        assert (out / "cams" / f"{image_id}.npy").is_file()
        assert (out / "seeds" / f"{image_id}.png").is_file()
    assert (out / "cam" / "model.pt").is_file()
