"""Honest resumes (issue 14.3) and the working resolution in a run (issue 14.6)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphwsss.cli import main
from graphwsss.config import load_config
from graphwsss.data import VOCDataset, read_label_png
from graphwsss.settings import RunSettings
from graphwsss.stages.manifest import stage_keys

TINY = ["limit=1", "propagator.epochs_first=1", "propagator.epochs_second=1",
        "crf.enabled=false", "device=cpu"]


def run_box(root, out, *overrides, force=False, stages=None):
    """``graphwsss run`` of the first sample image, box supervision, one epoch per phase."""
    return main(["run", "--data", str(root), "--supervision", "box", "--out", str(out),
                 *(["--force"] if force else []), *(["--stages", stages] if stages else []),
                 *TINY, *overrides])


_run = run_box


def _stamps(folder):
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


@pytest.mark.usefixtures("single_thread")
def test_changed_propagator_setting_stops_and_force_recomputes(tmp_path, sample_root, capsys):
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    first = json.loads((out / "metrics.json").read_text())
    assert first["resumed"] is False and set(first["stage_seconds"]) == {"seeds", "propagation",
                                                                      "refine"}
    config = (out / "config.yaml").read_text()
    labels, seeds = _stamps(out / "pseudo_labels"), _stamps(out / "seeds")
    capsys.readouterr()

    assert _run(sample_root, out, "propagator.name=gcn") == 2
    err = capsys.readouterr().err
    line = [text for text in err.splitlines() if text.startswith("graphwsss:")]
    assert len(line) == 1 and "Traceback" not in err
    assert 'propagator.name ("a2gnn" -> "gcn")' in line[0]
    assert "propagation stage" in line[0]
    assert "use a new --out, or --force to recompute propagation and what follows" in line[0]
    # Nothing changed: neither the labels nor config.yaml.
    assert (out / "config.yaml").read_text() == config
    assert _stamps(out / "pseudo_labels") == labels

    assert _run(sample_root, out, "propagator.name=gcn", force=True) == 0
    assert load_config(RunSettings, out / "config.yaml").propagator.name == "gcn"
    recorded = json.loads((out / "stages.json").read_text())
    assert recorded["propagation"]["settings"]["propagator.name"] == "gcn"
    assert _stamps(out / "seeds") == seeds                     # seeds kept: same settings
    assert all(_stamps(out / "pseudo_labels")[name] != stamp for name, stamp in labels.items())
    assert json.loads((out / "metrics.json").read_text())["labels_made_this_call"] == 1


@pytest.mark.usefixtures("single_thread")
def test_limit_device_and_report_images_resume(tmp_path, sample_root):
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    labels = _stamps(out / "pseudo_labels")
    assert _run(sample_root, out, "device=auto", "report_images=2") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["labels_made_this_call"] == 0
    assert metrics["seconds"] > 0 and metrics["seconds_this_call"] > 0
    assert _stamps(out / "pseudo_labels") == labels
    assert load_config(RunSettings, out / "config.yaml").report_images == 2


@pytest.mark.usefixtures("single_thread")
def test_changed_seed_setting_names_the_seeds_stage(tmp_path, sample_root, capsys):
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    capsys.readouterr()
    assert _run(sample_root, out, "seeds.grabcut_iterations=2") == 2
    assert "seeds stage" in capsys.readouterr().err
    assert _run(sample_root, out, "seeds.grabcut_iterations=2", force=True) == 0
    recorded = json.loads((out / "stages.json").read_text())
    assert recorded["seeds"]["settings"]["seeds.grabcut_iterations"] == 2


def test_folder_without_stages_json_is_checked_against_its_config(tmp_path, sample_root, capsys):
    """A run folder from before stages.json: its config.yaml stands for every stage."""
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    (out / "stages.json").unlink()
    capsys.readouterr()
    assert _run(sample_root, out, "crf.enabled=true") == 2
    assert "crf.enabled (false -> true)" in capsys.readouterr().err


def test_stage_keys_leave_out_what_changes_nothing():
    keys = stage_keys(RunSettings())
    assert set(keys) == {"seeds", "propagation", "refine"}      # box, no CAMs, no affinity CNN
    assert "crf.enabled" in keys["refine"] and "crf.enabled" not in keys["propagation"]
    flat = set().union(*keys.values())
    assert not {"limit", "device", "report_images"} & flat
    assert "propagator.epochs_first" in keys["propagation"] and "max_side" in keys["seeds"]
    assert "propagator.epochs_first" not in keys["seeds"]
    keys = stage_keys(RunSettings(supervision="point", graph=RunSettings().graph.__class__(
        builder="affinity")))
    assert set(keys) == {"cam", "seeds", "affinity", "propagation", "refine"}
    assert "cam.pooling" in keys["seeds"] and "cam.seed_fraction" not in keys["cam"]
    assert "affinity.steps" in keys["propagation"]
    graph = RunSettings().graph.__class__(builder="affinity")
    none = RunSettings(supervision="scribble", graph=graph,
                       propagator=RunSettings().propagator.__class__(name="none"))
    assert "affinity" not in stage_keys(none)       # no graph layers: no affinity CNN
    image_none = RunSettings(supervision="image", graph=graph, propagator=none.propagator)
    assert "affinity" in stage_keys(image_none)     # its random walk still reads the graph


@pytest.mark.usefixtures("single_thread")
def test_large_image_is_processed_at_max_side_and_labelled_at_full_size(tmp_path, sample_root):
    out = tmp_path / "run"
    assert _run(sample_root, out, "max_side=100") == 0
    dataset = VOCDataset(sample_root)
    image_id = dataset.ids[0]
    sample = dataset.load(image_id)
    assert max(sample.height, sample.width) > 100
    seeds = read_label_png(out / "seeds" / f"{image_id}.png")
    assert max(seeds.shape) == 100                              # processed at max_side
    label = read_label_png(out / "pseudo_labels" / f"{image_id}.png")
    assert label.shape == (sample.height, sample.width)         # written at the original size
    instance = read_label_png(out / "instances" / f"{image_id}.png")
    assert instance.shape == label.shape
    coco = json.loads((out / "instances" / f"{image_id}.json").read_text())
    assert coco and all(np.isfinite(entry["bbox"]).all() for entry in coco)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["miou"] <= 100 and metrics["seed_coverage"] is not None


@pytest.mark.usefixtures("single_thread")
def test_changed_crf_setting_reruns_refine_from_saved_probabilities(tmp_path, sample_root,
                                                                   capsys):
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    probabilities = _stamps(out / "probabilities")
    assert probabilities and all(name.endswith(".npy") for name in probabilities)
    capsys.readouterr()
    assert _run(sample_root, out, "crf.enabled=true") == 2
    assert "refine stage" in capsys.readouterr().err
    assert _run(sample_root, out, "crf.enabled=true", force=True) == 0
    assert _stamps(out / "probabilities") == probabilities       # propagation not redone
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels_made_this_call"] == 1
    assert json.loads((out / "stages.json").read_text())["refine"]["settings"]["crf.enabled"]


def test_record_of_a_stage_without_outputs_is_dropped(tmp_path):
    # e.g. seeds copied into a new folder with the stages.json of the run they came from: the
    # propagation stage's record describes nothing on disk, and its time must not be added to
    from graphwsss.stages.manifest import MANIFEST, check_stages

    settings = load_config(RunSettings, None, ["device=cpu"])
    keys = stage_keys(settings)
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "a.png").write_bytes(b"")
    (tmp_path / MANIFEST).write_text(json.dumps({
        "seeds": {"settings": keys["seeds"], "seconds": 3.0},
        "propagation": {"settings": keys["propagation"], "seconds": 100.0}}))
    kept = check_stages(tmp_path, settings)
    assert set(kept) == {"seeds"} and kept["seeds"]["seconds"] == 3.0


@pytest.mark.parametrize("key, on, off", [("graph.calibrate", "true", "false"),
                                         ("propagator.output_walk", "true", "false"),
                                         ("propagator.output_walk_box_reach", "0.2", "null"),
                                         ("graph.feature_affinity", "true", "false")])
def test_outputs_made_before_a_setting_existed_count_as_made_without_it(tmp_path, key, on, off):
    """A record without a setting added later was made as if it were off, so it matches only
    the off value: through BEFORE_ADDED where the class default is on (graph.calibrate), through
    the class default otherwise (propagator.output_walk, on for point and box runs;
    output_walk_box_reach, 0.2 for box runs)."""
    from graphwsss.config import ConfigError
    from graphwsss.stages.manifest import MANIFEST, check_stages

    settings = load_config(RunSettings, None, ["device=cpu", f"{key}={on}"])
    keys = stage_keys(settings)
    old = {name: value for name, value in keys["propagation"].items() if name != key}
    (tmp_path / "probabilities").mkdir()
    (tmp_path / "probabilities" / "a.npy").write_bytes(b"")
    (tmp_path / MANIFEST).write_text(json.dumps({"propagation": {"settings": old,
                                                                 "seconds": 1.0}}))
    with pytest.raises(ConfigError, match=key):
        check_stages(tmp_path, settings)
    off = load_config(RunSettings, None, ["device=cpu", f"{key}={off}"])
    assert set(check_stages(tmp_path, off)) == {"propagation"}
