"""Bad settings end ``graphwsss run`` in under a second with exit code 2 and one line naming the
key, before anything is written; ``--out`` that holds other files and is not a run is refused
unless ``--force``; inputs a supervision does not use are not read."""

from __future__ import annotations

import time

import pytest

from graphwsss.cli import _check_run_folder
from graphwsss.config import to_yaml
from graphwsss.data import DataError, VOCDataset
from graphwsss.settings import RunSettings
from tests.reliability.conftest import set_split

IMAGE = "10_10_s"
TINY = ["limit=1", "propagator.epochs_first=1", "propagator.epochs_second=1", "crf.enabled=false"]


@pytest.mark.parametrize("override, key, message", [
    ("limit=-1", "limit", "-1 is out of range (allowed: >= 0; 0 or null: every image)"),
    ("propagator.epochs_first=-1", "propagator.epochs_first",
     "-1 is out of range (allowed: >= 0)"),
    ("graph.radius=0", "graph.radius", "0 is out of range (allowed: >= 1)"),
    ("device=tpu", "device", "'tpu' is not a device (allowed: auto, cpu, cuda, cuda:N)"),
    ("device=cuda", "device",
     "'cuda' needs CUDA, which is not available here (use device=cpu or device=auto)"),
    ("graph.radiuss=3", "unknown setting(s) graph.radiuss", "graph. has builder, "),
    ("graph.radius=four", "graph.radius", "expected int, got 'four'"),
    ("crf.enabled=maybe", "crf.enabled", "expected true or false, got 'maybe'"),
])
def test_bad_setting_fails_fast_naming_the_key(sample_root, run_cli, monkeypatch, override, key,
                                               message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)     # also on a GPU machine
    started = time.perf_counter()
    code, line, out = run_cli(sample_root, override)
    assert time.perf_counter() - started < 1.0
    assert code == 2
    assert line.startswith(f"graphwsss: error: {key}") and message in line
    assert not out.exists()                                            # nothing written


def test_out_folder_with_other_files_is_refused_unless_forced(sample_copy, run_cli, tmp_path):
    out = tmp_path / "work" / "notes"
    out.mkdir(parents=True)
    (out / "thesis.tex").write_text("keep me")
    set_split(sample_copy, [IMAGE])
    code, line, _ = run_cli(sample_copy, *TINY, out=out)
    assert code == 2
    assert line == (f"graphwsss: error: {out}: --out is a folder that holds other files and is "
                    "not a graphwsss run (no run's config.yaml); name a new or empty folder, or "
                    "add --force to write into this one")
    assert sorted(path.name for path in out.iterdir()) == ["thesis.tex"]
    code, _, _ = run_cli(sample_copy, *TINY, "--force", out=out)
    assert code == 0
    assert (out / "pseudo_labels" / f"{IMAGE}.png").is_file()
    assert (out / "thesis.tex").read_text() == "keep me"
    code, _, _ = run_cli(sample_copy, *TINY, out=out)       # now a run: rerunning resumes
    assert code == 0


def test_run_folders_and_empty_folders_are_accepted(tmp_path):
    _check_run_folder(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    _check_run_folder(str(tmp_path / "empty"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(RunSettings()))
    (run / "report.html").write_text("")
    _check_run_folder(str(run))                              # e.g. `graphwsss demo` rerun
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text("learning_rate: 3\n")  # another tool's config
    with pytest.raises(DataError, match="not a graphwsss run"):
        _check_run_folder(str(other))
    _check_run_folder(str(other), force=True)


def test_box_run_does_not_read_a_broken_points_json(sample_copy, run_cli):
    set_split(sample_copy, [IMAGE])
    (sample_copy / "points.json").write_text("{broken")
    with pytest.raises(DataError, match="points JSON: invalid JSON"):
        VOCDataset(sample_copy, supervision="point").load(IMAGE)
    sample = VOCDataset(sample_copy, supervision="box").load(IMAGE)
    assert sample.points is None and sample.scribble is None and sample.boxes
    code, err, out = run_cli(sample_copy, *TINY)
    assert code == 0, err
    assert (out / "pseudo_labels" / f"{IMAGE}.png").is_file()


def test_scribbles_are_read_only_by_scribble_runs(sample_copy):
    path = sample_copy / "SegmentationScribble" / f"{IMAGE}.png"
    path.write_bytes(b"not a png")
    assert VOCDataset(sample_copy, supervision="box").load(IMAGE).scribble is None
    assert VOCDataset(sample_copy, supervision="point").load(IMAGE).scribble is None
    with pytest.raises(DataError, match=str(path)):
        VOCDataset(sample_copy, supervision="scribble").load(IMAGE)
