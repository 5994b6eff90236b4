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


def test_resume_with_other_settings_stops(tmp_path, sample_root, capsys):
    """Issue 14.3 (more in test_manifest.py): other settings for finished stages stop the run."""
    out = tmp_path / "run"
    assert _run(sample_root, out, "limit=1", "crf.enabled=false") == 0
    assert _run(sample_root, out, "limit=1", "crf.enabled=false") == 0
    capsys.readouterr()
    assert _run(sample_root, out, "limit=1", "crf.enabled=true", "propagator.name=none") == 2
    err = capsys.readouterr().err
    # The first stage whose settings differ is named: propagation (crf.* belong to refine).
    assert 'propagator.name ("a2gnn" -> "none")' in err and "propagation stage" in err


SPARSE_FAST = ["limit=2", "cam.training.epochs=1", "cam.training.batch_size=2",
               "cam.training.crop_size=64", "cam.inference_scales=[1.0]",
               "cam.inference_flip=false", "crf.enabled=false", "propagator.epochs_first=2",
               "propagator.epochs_second=1", "affinity.steps=2", "affinity.training.batch_size=2",
               "device=cpu"]


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
    import graphwsss.stages.affinity as affinity_module
    used = {}
    original = affinity_module.train_affinity

    def spy(dataset, image_ids, seed_dir, *args, **kwargs):
        used["seed_dir"] = seed_dir
        return original(dataset, image_ids, seed_dir, *args, **kwargs)

    monkeypatch.setattr(affinity_module, "train_affinity", spy)
    out = tmp_path / "point"
    assert main(["run", "--data", str(sample_root), "--supervision", "point", "--out", str(out),
                 *SPARSE_FAST, "graph.builder=affinity", "affinity.training.epochs=1", "affinity.steps=3",
                 "affinity.training.batch_size=2", "affinity.training.crop_size=64"]) == 0
    assert used["seed_dir"] == out / "affinity_seeds"
    assert (out / "affinity" / "model.pt").is_file()


def test_none_run_trains_no_affinity_cnn(tmp_path, sample_root, monkeypatch):
    """``propagator.name=none`` reads no graph: the scribble default ``graph.builder=affinity``
    trains nothing there, and the run's node features are the backbone's all the same."""
    import graphwsss.stages.affinity as affinity_module

    def fail(*args, **kwargs):
        raise AssertionError("the affinity CNN was trained for a run without graph layers")

    monkeypatch.setattr(affinity_module, "train_affinity", fail)
    out = tmp_path / "none"
    assert main(["run", "--data", str(sample_root), "--supervision", "scribble", "--out",
                 str(out), *SPARSE_FAST, "graph.builder=affinity", "propagator.name=none"]) == 0
    assert not (out / "affinity").exists()
    assert "affinity" not in json.loads((out / "stages.json").read_text())
    assert (out / "metrics.json").is_file()


def test_box_run_with_cam_fusion_trains_cams(tmp_path, sample_root):
    out = tmp_path / "box_cam"
    assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(out),
                 *SPARSE_FAST, "seeds.cam_fusion=true"]) == 0
    dataset = VOCDataset(sample_root)
    for image_id in dataset.ids[:2]:
        assert (out / "cams" / f"{image_id}.npy").is_file()
        assert (out / "seeds" / f"{image_id}.png").is_file()
    assert (out / "cam" / "model.pt").is_file()


def _cams_without_confident_background(root, out, image_ids):
    """Write CAMs that explain every pixel (no map below 0.3, so M'_I has no confident
    background) for ``image_ids``: the run skips CAM training and uses these."""
    from graphwsss.stages.cam import write_cams
    dataset = VOCDataset(root)
    for image_id in image_ids:
        sample = dataset.load(image_id)
        cams = np.zeros((dataset.num_classes - 1, sample.height, sample.width), np.float32)
        rows, cols = np.indices((sample.height, sample.width))
        for point in sample.points:
            near = np.exp(-np.hypot(rows - point.y, cols - point.x) / 40.0)
            cams[point.class_id - 1] = np.maximum(cams[point.class_id - 1], 0.3 + 0.7 * near)
        write_cams(out / "cams" / f"{image_id}.npy", cams)


def test_point_run_with_weak_cams_gets_background_seeds_and_counts_single_class(
        tmp_path, sample_root, caplog):
    """Issue 13: CAMs without confident background still give point seeds a background; with
    the rule switched off every seed map is one class, each image warns and metrics.json counts
    the seed maps and the one-class pseudo labels."""
    from graphwsss.settings import supervision_defaults
    from graphwsss.stages.run import run
    ids = VOCDataset(sample_root).ids[:2]
    runs = {}
    for name, extra in (("rule", []), ("off", ["seeds.background_fraction=0"])):
        out = tmp_path / name
        _cams_without_confident_background(sample_root, out, ids)
        caplog.clear()
        # run() itself: the CLI refuses an --out that already holds files (the CAMs).
        settings = load_config(RunSettings, None, ["supervision=point", *SPARSE_FAST, *extra],
                               defaults=supervision_defaults("point"))
        run(sample_root, out, settings, show_progress=False)
        runs[name] = (json.loads((out / "metrics.json").read_text()), caplog.text)
        seeds = [read_label_png(out / "seeds" / f"{image_id}.png") for image_id in ids]
        affinity = [read_label_png(out / "affinity_seeds" / f"{image_id}.png") for image_id in ids]
        has_background = [(s == 0).any() for s in seeds + affinity]
        assert all(has_background) if name == "rule" else not any(has_background)
    metrics, log_text = runs["rule"]
    assert metrics["seeds_single_class"] == 0 and metrics["seeds_single_class_ids"] == []
    assert "its seeds hold" not in log_text
    assert metrics["single_class_labels"] == len(metrics["single_class_label_ids"])
    metrics, log_text = runs["off"]
    assert metrics["seeds_single_class"] == 2 and metrics["seeds_single_class_ids"] == sorted(ids)
    for image_id in ids:
        assert f"image {image_id}: its seeds hold class" in log_text
    assert metrics["single_class_labels"] == 2
    assert "2 of 2 pseudo labels are one class over the whole image" in log_text
