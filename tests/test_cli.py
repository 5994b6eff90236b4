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
    assert "1_11_s.png: prediction is missing" in capsys.readouterr().err


@pytest.mark.shared_data
@pytest.mark.parametrize("name,expected", [("grabcut", 63.0), ("msrc-objects", 73.1)])
def test_filled_box_reference_points(tmp_path, name, expected):
    """Independent cross-check of readers and metrics against shared/README.md's table."""
    root = shared_set(name)
    assert main(["fill-boxes", "--data", str(root), "--out", str(tmp_path / "pred")]) == 0
    assert main(["evaluate", "--data", str(root), "--pred", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["miou"] == pytest.approx(expected, abs=0.5)


def test_evaluate_partial_and_limit_score_a_limited_run(tmp_path, sample_root, capsys):
    """A limit=3 run's labels can be scored: --partial (the images with a prediction) or
    --limit 3 (the first three of the split); without either a missing one is an error."""
    assert main(["fill-boxes", "--data", str(sample_root), "--out", str(tmp_path / "pred"),
                 "--limit", "3"]) == 0
    assert main(["evaluate", "--data", str(sample_root), "--pred", str(tmp_path / "pred")]) == 2
    assert "prediction is missing (graphwsss evaluate --partial" in capsys.readouterr().err
    for flags in (["--partial"], ["--limit", "3"]):
        out = tmp_path / f"m{len(flags)}.json"
        assert main(["evaluate", "--data", str(sample_root), "--pred", str(tmp_path / "pred"),
                     "--out", str(out), *flags]) == 0
        assert json.loads(out.read_text())["images"] == 3
    assert "9 images of the split without a prediction skipped" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "--data", str(sample_root), "--pred", str(tmp_path / "empty"),
                 "--partial"]) == 2
    assert "holds no <id>.png" in capsys.readouterr().err


def test_settings_lists_every_key_with_type_default_and_meaning(capsys):
    import dataclasses

    from graphwsss.settings import RunSettings

    assert main(["settings", "--supervision", "point", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {row["key"]: row for row in rows}

    def keys(cls, prefix=""):
        for spec in dataclasses.fields(cls):
            default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING \
                else spec.default
            if dataclasses.is_dataclass(default):
                yield from keys(type(default), f"{prefix}{spec.name}.")
            else:
                yield prefix + spec.name

    assert list(by_key) == list(keys(RunSettings))
    assert all(row["meaning"] and row["type"] for row in rows), \
        [row["key"] for row in rows if not row["meaning"]]
    assert by_key["graph.radius"]["default"] == 3          # the point supervision's default
    assert by_key["graph.radius"]["allowed"] == ">= 1"
    assert "r on the stride-8 grid" in by_key["graph.radius"]["meaning"]
    # Continuation lines of a comment are joined into the meaning.
    assert by_key["seeds.cam_fusion"]["meaning"].endswith("(§2, eq. 3.4-3.5)")
    assert main(["settings"]) == 0
    text = capsys.readouterr().out
    assert 'seeds.source = "weak_labels"' in text and "graph.radius = 4  (int; >= 1)" in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "graphwsss settings" in capsys.readouterr().out


def _fresh_python(code, cwd):
    import os
    import subprocess
    import sys
    import time

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    return result, time.perf_counter() - started


def test_help_is_fast_and_bad_settings_fail_before_torch(tmp_path):
    """``graphwsss --help`` loads no heavy module (torch, torch_geometric, cv2, the data
    readers); a bad setting of run fails before torch is imported."""
    heavy = ("torch", "torch_geometric", "cv2", "graphwsss.data.voc", "graphwsss.data.coco",
             "scipy", "skimage")
    code = ("import sys\nfrom graphwsss.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    result, seconds = _fresh_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]"), result.stdout[-300:]
    assert seconds < 5          # about 0.3 s here; generous for a loaded machine
    code = ("import sys\nfrom graphwsss.cli import main\n"
            "rc = main(['run', '--data', 'X', '--supervision', 'box', '--out', 'Y', "
            "'graph.radius=0'])\nprint(rc, 'torch' in sys.modules)")
    result, _ = _fresh_python(code, tmp_path)
    assert result.stdout.split()[-2:] == ["2", "False"], result.stdout + result.stderr
    assert "graph.radius: 0 is out of range" in result.stderr
    assert not (tmp_path / "Y").exists()


def test_demo_recomputes_stages_made_with_other_settings(tmp_path, capsys):
    """A demo folder left by another version (other defaults) is brought up to date, not
    refused: the stages whose settings differ are recomputed."""
    tiny = ["limit=2", "propagator.epochs_first=1", "propagator.epochs_second=1", "device=cpu"]
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *tiny]) == 0
    before = json.loads((out / "stages.json").read_text())
    assert main(["demo", "--out", str(out), *tiny, "crf.enabled=false"]) == 0
    after = json.loads((out / "stages.json").read_text())
    assert before["refine"]["settings"]["crf.enabled"] is True
    assert after["refine"]["settings"]["crf.enabled"] is False
    assert after["seeds"] == before["seeds"]             # the seeds were resumed
    assert "CRF" not in capsys.readouterr().out.strip().splitlines()[-2]
