"""``graphwsss run --stages LIST``: rerunning part of a finished run (docs/method.md §1)."""

from __future__ import annotations

import json

import pytest
import yaml

from graphwsss.config import ConfigError
from graphwsss.stages.manifest import RUN_STAGES, parse_stages

from .test_manifest import _stamps
from .test_manifest import run_box as _run


@pytest.fixture
def finished(tmp_path, sample_root):
    out = tmp_path / "run"
    assert _run(sample_root, out) == 0
    return out


def test_parse_stages_orders_and_rejects_unknown_names():
    assert parse_stages("evaluate, refine") == ("refine", "evaluate")
    assert set(parse_stages(",".join(RUN_STAGES))) == set(RUN_STAGES)
    with pytest.raises(ConfigError, match="unknown stage crf; the stages are cam, seeds"):
        parse_stages("refine,crf")
    with pytest.raises(ConfigError, match="no stage named"):
        parse_stages(" , ")


@pytest.mark.usefixtures("single_thread")
def test_refine_and_evaluate_rerun_with_new_crf_settings_only(finished, sample_root):
    seeds, probabilities = _stamps(finished / "seeds"), _stamps(finished / "probabilities")
    labels = _stamps(finished / "pseudo_labels")
    assert _run(sample_root, finished, "crf.enabled=true", stages="refine,evaluate") == 0
    assert _stamps(finished / "seeds") == seeds
    assert _stamps(finished / "probabilities") == probabilities
    assert _stamps(finished / "pseudo_labels") != labels           # remade
    metrics = json.loads((finished / "metrics.json").read_text())
    assert metrics["labels_made_this_call"] == 1
    manifest = json.loads((finished / "stages.json").read_text())
    assert manifest["refine"]["settings"]["crf.enabled"] is True
    assert yaml.safe_load((finished / "config.yaml").read_text())["crf"]["enabled"] is True
    assert not (finished / "report.html").exists()                 # not named: stale, deleted
    # The folder is consistent again: a plain rerun with the same settings resumes.
    assert _run(sample_root, finished, "crf.enabled=true") == 0
    assert json.loads((finished / "metrics.json").read_text())["labels_made_this_call"] == 0


@pytest.mark.usefixtures("single_thread")
def test_evaluate_alone_keeps_the_labels(finished, sample_root):
    labels = _stamps(finished / "pseudo_labels")
    (finished / "metrics.json").unlink()
    assert _run(sample_root, finished, stages="evaluate") == 0
    assert _stamps(finished / "pseudo_labels") == labels
    assert json.loads((finished / "metrics.json").read_text())["images"] == 1


@pytest.mark.usefixtures("single_thread")
def test_changed_earlier_setting_is_refused_and_nothing_deleted(finished, sample_root, capsys):
    labels = _stamps(finished / "pseudo_labels")
    capsys.readouterr()
    assert _run(sample_root, finished, "propagator.hidden=16", stages="refine") == 2
    message = capsys.readouterr().err
    assert "propagator.hidden" in message and "add propagation to --stages" in message
    assert _stamps(finished / "pseudo_labels") == labels
    assert (finished / "metrics.json").is_file()


@pytest.mark.usefixtures("single_thread")
def test_a_gap_between_named_stages_is_refused(finished, sample_root, capsys):
    capsys.readouterr()
    assert _run(sample_root, finished, stages="seeds,refine") == 2
    assert "propagation lies between the stages named" in capsys.readouterr().err


@pytest.mark.usefixtures("single_thread")
def test_missing_inputs_are_named_before_anything_is_deleted(finished, sample_root, capsys):
    missing = next((finished / "probabilities").iterdir())
    missing.unlink()
    labels = _stamps(finished / "pseudo_labels")
    capsys.readouterr()
    assert _run(sample_root, finished, stages="refine") == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "add propagation to --stages" in message
    assert _stamps(finished / "pseudo_labels") == labels


def test_stages_need_an_earlier_run(tmp_path, sample_root, capsys):
    assert _run(sample_root, tmp_path / "new", stages="refine") == 2
    assert "--stages reruns stages of an earlier run" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.usefixtures("single_thread")
def test_later_stages_not_named_are_deleted_as_stale(finished, sample_root):
    assert _run(sample_root, finished, "propagator.hidden=16", stages="propagation") == 0
    assert (finished / "probabilities").is_dir()
    assert not (finished / "pseudo_labels").exists()          # made from the old probabilities
    assert not (finished / "metrics.json").exists()
    assert _run(sample_root, finished, "propagator.hidden=16") == 0      # resumes: refine only
    assert (finished / "pseudo_labels").is_dir()


@pytest.mark.usefixtures("single_thread")
def test_report_alone_shows_the_metrics_on_disk(finished, sample_root):
    (finished / "report.html").unlink()
    assert _run(sample_root, finished, stages="report") == 0
    page = (finished / "report.html").read_text()
    miou = json.loads((finished / "metrics.json").read_text())["miou"]
    assert f"{miou:.1f}" in page or f"{miou:.2f}" in page


@pytest.mark.usefixtures("single_thread")
def test_a_setting_recorded_under_another_stage_does_not_block(finished, sample_root):
    """Run folders from before the refine stage recorded ``crf.*`` under propagation; a key the
    stage no longer reads changes nothing in its outputs."""
    manifest = json.loads((finished / "stages.json").read_text())
    manifest["propagation"]["settings"]["crf.enabled"] = True
    manifest["propagation"]["settings"]["propagator.removed_setting"] = 3
    (finished / "stages.json").write_text(json.dumps(manifest))
    assert _run(sample_root, finished, stages="refine,evaluate") == 0
