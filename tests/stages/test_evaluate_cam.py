"""Tests for graphwsss.stages.evaluate_cam and ``graphwsss evaluate-cam``."""

import json

import numpy as np
import pytest

from graphwsss.cli import main
from graphwsss.data.errors import DataError
from graphwsss.data.voc import VOCDataset
from graphwsss.stages.cam import write_cams
from graphwsss.stages.evaluate_cam import DEFAULT_THRESHOLDS, evaluate_cams

IDS = ["1_27_s", "6_15_s", "10_10_s"]


def write_run(root, run, make_cams, ids=IDS):
    dataset = VOCDataset(root)
    for image_id in ids:
        write_cams(run / "cams" / f"{image_id}.npy",
                   make_cams(dataset.ground_truth(image_id), dataset.num_classes - 1))
    return dataset


def perfect(ground_truth, num_classes):
    """1 on each class's pixels, 0 elsewhere (void pixels 0 too)."""
    return np.stack([(ground_truth == k + 1) for k in range(num_classes)]).astype(np.float32)


def test_threshold_sweep_covers_0_to_059():
    assert len(DEFAULT_THRESHOLDS) == 60
    assert DEFAULT_THRESHOLDS[0] == 0.0 and DEFAULT_THRESHOLDS[-1] == 0.59


def test_perfect_cams_score_100_at_some_threshold(sample_root, tmp_path):
    write_run(sample_root, tmp_path, perfect)
    metrics = evaluate_cams(sample_root, tmp_path, show_progress=False)
    assert metrics["miou"] == pytest.approx(100.0)
    assert metrics["contour_f"] == pytest.approx(100.0)
    assert 0.0 < metrics["best_threshold"] <= 0.59
    assert metrics["images"] == 3
    assert len(metrics["sweep"]) == 60
    # At t = 0 nothing is background: every background pixel goes to class 1.
    assert metrics["sweep"][0]["miou"] < 100.0
    assert metrics["per_class_iou"]["background"] == pytest.approx(100.0)


def test_sweep_finds_the_threshold_between_background_and_object(sample_root, tmp_path):
    def graded(ground_truth, num_classes):
        cams = 0.45 * perfect(ground_truth, num_classes)
        # Each present class also shows a weaker 0.25 over the background.
        for k in np.unique(ground_truth[(ground_truth > 0) & (ground_truth < 255)]):
            cams[k - 1][ground_truth == 0] = 0.25
        return cams

    write_run(sample_root, tmp_path, graded)
    metrics = evaluate_cams(sample_root, tmp_path, show_progress=False)
    assert metrics["best_threshold"] == pytest.approx(0.26)      # the first t above 0.25
    assert metrics["miou"] == pytest.approx(100.0)
    by_threshold = {entry["threshold"]: entry["miou"] for entry in metrics["sweep"]}
    assert by_threshold[0.25] < 90.0 and by_threshold[0.44] == pytest.approx(100.0)
    assert by_threshold[0.46] < 50.0        # float16 0.45 < 0.45: everything background


def test_missing_folder_wrong_shape_and_unknown_ids_name_the_file(sample_root, tmp_path):
    with pytest.raises(DataError, match="cams"):
        evaluate_cams(sample_root, tmp_path / "nothing", show_progress=False)
    (tmp_path / "empty" / "cams").mkdir(parents=True)
    with pytest.raises(DataError, match="no <id>.npy"):
        evaluate_cams(sample_root, tmp_path / "empty", show_progress=False)
    run = tmp_path / "run"
    write_run(sample_root, run, perfect, ids=["1_27_s"])
    write_cams(run / "cams" / "6_15_s.npy", np.zeros((16, 10, 10), np.float32))
    with pytest.raises(DataError, match="6_15_s.npy.*image is 320x213"):
        evaluate_cams(sample_root, run, show_progress=False)
    write_cams(run / "cams" / "6_15_s.npy", np.zeros((3, 213, 320), np.float32))
    with pytest.raises(DataError, match="6_15_s.npy.*K = 16"):
        evaluate_cams(sample_root, run, show_progress=False)
    (run / "cams" / "6_15_s.npy").unlink()
    write_cams(run / "cams" / "elsewhere.npy", np.zeros((16, 5, 5), np.float32))
    with pytest.raises(DataError, match="elsewhere.npy.*not in split"):
        evaluate_cams(sample_root, run, show_progress=False)


def test_cli_writes_the_metrics(sample_root, tmp_path, capsys):
    write_run(sample_root, tmp_path, perfect, ids=IDS[:2])
    assert main(["evaluate-cam", "--data", str(sample_root), "--run", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "cam_metrics.json").read_text())
    assert {"miou", "contour_f", "best_threshold", "per_class_iou", "sweep"} <= set(metrics)
    assert "best threshold" in capsys.readouterr().out
    out = tmp_path / "elsewhere" / "m.json"
    assert main(["evaluate-cam", "--data", str(sample_root), "--run", str(tmp_path),
                 "--out", str(out)]) == 0
    assert out.is_file()
    assert main(["evaluate-cam", "--data", str(sample_root), "--run", str(tmp_path / "x")]) == 2
    assert "cams" in capsys.readouterr().err

    wide = tmp_path / "wide.json"
    assert main(["evaluate-cam", "--data", str(sample_root), "--run", str(tmp_path),
                 "--max-threshold", "0.9", "--out", str(wide)]) == 0
    sweep = [entry["threshold"] for entry in json.loads(wide.read_text())["sweep"]]
    assert len(sweep) == 91 and sweep[-1] == pytest.approx(0.9)
    assert main(["evaluate-cam", "--data", str(sample_root), "--run", str(tmp_path),
                 "--max-threshold", "1.5"]) == 2
    assert "--max-threshold" in capsys.readouterr().err
