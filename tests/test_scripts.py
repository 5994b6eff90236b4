"""The results scripts under ``scripts/`` on the bundled sample (tiny schedules)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY_CAM = ["limit=2", "cam.training.epochs=1", "cam.training.batch_size=2",
            "cam.training.crop_size=64", "cam.inference_scales=[1.0]", "cam.inference_flip=false",
            "device=cpu"]


def _cam_results(sample_root, out, *extra):
    return subprocess.run([sys.executable, str(SCRIPTS / "cam_results.py"), "--data",
                           str(sample_root), "--out", str(out), *extra, *TINY_CAM],
                          capture_output=True, text=True, timeout=600)


def test_cam_results_trains_scores_and_resumes(sample_root, tmp_path):
    done = _cam_results(sample_root, tmp_path, "--variants", "gap:none,is:multinomial")
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "table.json").read_text())
    assert [(row["pooling"], row["fsl"]) for row in rows] == [("gap", "none"),
                                                              ("is", "multinomial")]
    for row in rows:
        assert 0 <= row["miou"] <= 100 and row["wall_seconds"] > 0
        assert row["best_threshold"] <= 0.59 and row["wide_best_threshold"] <= 0.95
        assert row["wide_miou"] >= row["miou"] - 1e-9    # the wide sweep contains the narrow one
    assert "| gap | none |" in (tmp_path / "table.md").read_text()

    again = _cam_results(sample_root, tmp_path, "--variants", "gap:none")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "table.json").read_text())[0]["wall_seconds"] is None


def test_cam_results_rejects_a_malformed_variant(sample_root, tmp_path):
    done = _cam_results(sample_root, tmp_path, "--variants", "gap")
    assert done.returncode == 2 and "POOLING:FSL" in done.stderr


def test_box_seed_analysis_reads_a_finished_box_run(sample_root, tmp_path):
    from graphwsss.cli import main

    run = tmp_path / "run"
    assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(run),
                 "limit=2", "propagator.epochs_first=1", "propagator.epochs_second=1",
                 "crf.enabled=false", "device=cpu"]) == 0
    done = subprocess.run([sys.executable, str(SCRIPTS / "box_seed_analysis.py"), "--data",
                           str(sample_root), "--run", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 images; foreground seeds" in done.stdout
    assert "boxes by tightness" in done.stdout and "% of the wrong" in done.stdout
    empty = subprocess.run([sys.executable, str(SCRIPTS / "box_seed_analysis.py"), "--data",
                            str(sample_root), "--run", str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and "no image with seeds" in empty.stderr


def test_box_size_change_compares_two_box_runs_box_by_box(sample_root, tmp_path):
    from graphwsss.cli import main

    runs = []
    for name, walk in (("walked", "true"), ("plain", "false")):
        runs.append(tmp_path / name)
        assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out",
                     str(runs[-1]), "limit=2", "propagator.epochs_first=1",
                     "propagator.epochs_second=1", "crf.enabled=false", "device=cpu",
                     f"propagator.output_walk={walk}"]) == 0
    script = [sys.executable, str(SCRIPTS / "box_size_change.py"), "--data", str(sample_root)]
    done = subprocess.run([*script, "--run", str(runs[0]), "--against", str(runs[1])],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    boxes = int(done.stdout.split(" boxes;")[0])
    assert boxes >= 2 and "short side (nodes)" in done.stdout
    groups = [line.split() for line in done.stdout.splitlines()[2:]]
    assert sum(int(group[3]) for group in groups) == boxes        # every box in one group
    same = subprocess.run([*script, "--run", str(runs[1]), "--against", str(runs[1])],
                          capture_output=True, text=True, timeout=300)
    assert same.returncode == 0 and "mean +0.00" in same.stdout
    missing = subprocess.run([*script, "--run", str(runs[0]), "--against", str(tmp_path / "no")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "no image that both runs labelled" in missing.stderr


def test_graph_stats_reports_purity_and_affinities(sample_root):
    done = subprocess.run([sys.executable, str(SCRIPTS / "graph_stats.py"), "--data",
                           str(sample_root), "--limit", "1", "--calibrate"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" {", 1) for line in done.stdout.strip().splitlines()[-2:])
    raw, calibrated = (json.loads("{" + lines[name]) for name in ("backbone",
                                                                  "backbone, calibrated"))
    assert 0.5 < raw["purity"] <= 1.0
    # ImageNet features already tell classes apart: neighbours of one class are more alike.
    assert 0.0 < raw["D_across"] < raw["D_within"] <= 1.0
    assert raw["pairs_within"] > 0 and raw["pairs_across"] > 0
    # the attention's edge term: exp(-d) leaves most of each node's weight on its self loop;
    # the calibrated graph gives most of it to neighbours of the node's class
    for stats in (raw, calibrated):
        shares = stats["attention_self"] + stats["attention_within"] + stats["attention_across"]
        assert 0.0 < shares <= 1.0 + 1e-6
    assert raw["attention_self"] > 0.5 > calibrated["attention_self"]
    assert calibrated["attention_within"] > raw["attention_within"]
    assert calibrated["D_within"] > raw["D_within"]


def test_refine_variants_scores_superpixel_refinement(sample_root, tmp_path):
    from graphwsss.cli import main

    run = tmp_path / "run"
    assert main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(run),
                 "limit=2", "propagator.epochs_first=1", "propagator.epochs_second=1",
                 "device=cpu"]) == 0
    variants = ["tubg:4", "tubg:4,sp:8", "tubg:4,sp:8,spw:0", "tubg:4,sp:8,spafter:1"]
    done = subprocess.run([sys.executable, str(SCRIPTS / "refine_variants.py"), "--data",
                           str(sample_root), "--run", str(run), "--variants", *variants],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    scores = {line.split()[2]: line.split()[4:] for line in done.stdout.splitlines()
              if line.startswith("2 images")}
    assert set(scores) == set(variants)
    metrics = json.loads((run / "metrics.json").read_text())
    assert float(scores["tubg:4"][0]) == round(metrics["miou"], 2)   # = the refine stage
    assert scores["tubg:4,sp:8,spw:0"] == scores["tubg:4"]           # weight 0: no change


def test_superpixel_mean_averages_within_each_superpixel():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("refine_variants", SCRIPTS / "refine_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255                                 # two flat halves: superpixels stay inside
    probs = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    mean = module.superpixel_mean(image, probs, size=16, compactness=10, weight=1)
    assert mean.shape == probs.shape
    assert np.allclose(mean.sum((1, 2)), probs.sum((1, 2)), rtol=1e-4)   # means keep the mass
    for half in (mean[:, :, :16], mean[:, :, 16:]):     # constant within each superpixel: few values
        assert len(np.unique(half[0].round(5))) <= 4
    half_mixed = module.superpixel_mean(image, probs, size=16, compactness=10, weight=0.5)
    assert np.allclose(half_mixed, 0.5 * probs + 0.5 * mean, atol=1e-6)
