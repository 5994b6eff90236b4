import json

import pytest

from graphwsss.cli import main
from tests.conftest import shared_set


def test_help_and_info(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "evaluate" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch_scatter" in out and "pydensecrf" in out


def test_evaluate_filled_boxes_on_sample(tmp_path, sample_root, capsys):
    assert main(["fill-boxes", "--data", str(sample_root), "--out", str(tmp_path / "pred")]) == 0
    out_json = tmp_path / "metrics.json"
    assert main(["evaluate", "--data", str(sample_root), "--pred", str(tmp_path / "pred"),
                 "--out", str(out_json)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out_json.read_text())
    assert metrics["images"] == 12
    assert f"{metrics['miou']:.1f}" in printed and "contour F" in printed
    assert 50 < metrics["miou"] < 90 and metrics["per_class_iou"]["horse"] is None


def test_evaluate_missing_prediction_names_file(tmp_path, sample_root, capsys):
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--data", str(sample_root), "--pred", str(tmp_path / "pred")]) == 2
    assert "1_11_s.png: label file is missing" in capsys.readouterr().err


@pytest.mark.shared_data
@pytest.mark.parametrize("name,expected", [("grabcut", 63.0), ("msrc-objects", 73.1)])
def test_filled_box_reference_points(tmp_path, name, expected):
    """Independent cross-check of readers and metrics against shared/README.md's table."""
    root = shared_set(name)
    assert main(["fill-boxes", "--data", str(root), "--out", str(tmp_path / "pred")]) == 0
    assert main(["evaluate", "--data", str(root), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(expected, abs=0.5)
