"""Tests for graphwsss.stages.analyze and ``graphwsss analyze`` on tiny synthetic VOC folders."""

import json

import numpy as np
import pytest

from graphwsss.cli import main
from graphwsss.data.errors import DataError
from graphwsss.data.palette import write_label_png
from graphwsss.stages.analyze import (SPLITS, analyze_run, band_radius, boundary_band,
                                      format_report)


def make_data(root, truths, class_names=("background", "object")):
    """A VOC folder with only labels.txt, the train list and SegmentationClass/<id>.png."""
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labels.txt").write_text("\n".join(class_names) + "\n")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(truths) + "\n")
    for image_id, truth in truths.items():
        write_label_png(root / "SegmentationClass" / f"{image_id}.png", truth)
    return root


def make_run(run, labels, seeds):
    for image_id, label in labels.items():
        write_label_png(run / "pseudo_labels" / f"{image_id}.png", label)
    for image_id, seed in seeds.items():
        write_label_png(run / "seeds" / f"{image_id}.png", seed)
    return run


def hand_case():
    """4x10 image, background in columns 0-4, object in 5-9; band radius 1 (diagonal 10.8).

    Edges: columns 4, 5; band: columns 3-6. Seeds: columns 0, 1 (background), 5, 9 (object).
    Errors: column 4 (unknown, band), column 8 (unknown, interior), pixel (0, 0) (seeded,
    interior).
    """
    truth = np.zeros((4, 10), np.uint8)
    truth[:, 5:] = 1
    seeds = np.full((4, 10), 255, np.uint8)
    seeds[:, :2] = 0
    seeds[:, [5, 9]] = 1
    prediction = truth.copy()
    prediction[:, 4] = 1
    prediction[:, 8] = 0
    prediction[0, 0] = 1
    return truth, seeds, prediction


@pytest.fixture
def hand(tmp_path):
    truth, seeds, prediction = hand_case()
    other = np.zeros((6, 8), np.uint8)
    data = make_data(tmp_path / "data", {"a": truth, "b": other})
    run = make_run(tmp_path / "run", {"a": prediction}, {"a": seeds})     # no pseudo label for b
    return data, run


def test_band_radius_rounds_up():
    assert band_radius(4, 10) == 1            # 0.02 * 10.77 = 0.215
    assert band_radius(30, 40) == 1           # exactly 1.0: not 2
    assert band_radius(31, 40) == 2           # 1.012
    assert band_radius(300, 400) == 10
    assert band_radius(375, 500) == 13        # a VOC image: 0.02 * 625 = 12.5


def test_band_counts_void_as_a_label_and_uses_euclidean_distance():
    truth = np.zeros((7, 7), np.uint8)
    truth[3, 3] = 255                         # edges: the void pixel and its 4 neighbours
    rows, cols = np.mgrid[:7, :7]
    expected = np.abs(rows - 3) + np.abs(cols - 3) <= 2          # within 1 px of the plus
    assert np.array_equal(boundary_band(truth), expected)
    assert not boundary_band(np.zeros((5, 5), np.uint8)).any()   # no edge, no band


def test_hand_made_split_accuracies(hand):
    data, run = hand
    result = analyze_run(data, run, show_progress=False)
    assert result["images"] == 1 and result["skipped"] == 1 and result["skipped_ids"] == ["b"]
    assert result["pixels"] == 40
    splits = result["splits"]
    expected = {  # split: (pixels, correct)
        "all": (40, 31), "seeded": (16, 15), "unknown": (24, 16), "band": (16, 12),
        "interior": (24, 19), "seeded_band": (4, 4), "seeded_interior": (12, 11),
        "unknown_band": (12, 8), "unknown_interior": (12, 8)}
    for name, (pixels, correct) in expected.items():
        assert splits[name]["pixels"] == pixels, name
        assert splits[name]["share"] == pytest.approx(100 * pixels / 40), name
        assert splits[name]["accuracy"] == pytest.approx(100 * correct / pixels), name
    # Unknown as background: background is columns 2-4 of the unknown columns 2-4, 6-8.
    assert splits["unknown"]["unknown_as_background"] == pytest.approx(50.0)
    assert splits["unknown_band"]["unknown_as_background"] == pytest.approx(100 * 8 / 12)
    assert splits["unknown_interior"]["unknown_as_background"] == pytest.approx(100 * 4 / 12)
    assert "unknown_as_background" not in splits["seeded"]
    assert "only_run" not in splits["all"]

    background, obj = result["per_class"]["background"], result["per_class"]["object"]
    assert (background["pixels"], obj["pixels"]) == (20, 20)
    assert background["accuracy"] == pytest.approx(75.0) and obj["accuracy"] == pytest.approx(80.0)
    assert background["splits"]["seeded"]["accuracy"] == pytest.approx(100 * 7 / 8)
    assert background["splits"]["unknown"]["accuracy"] == pytest.approx(100 * 8 / 12)
    assert background["splits"]["band"]["accuracy"] == pytest.approx(50.0)
    assert background["splits"]["interior"]["accuracy"] == pytest.approx(100 * 11 / 12)

    (image,) = result["per_image"]
    assert image["id"] == "a" and image["pixels"] == 40 and image["band_radius"] == 1
    assert image["accuracy"] == pytest.approx(77.5)
    assert image["splits"]["unknown_band"]["accuracy"] == pytest.approx(100 * 8 / 12)


def test_against_counts_and_ordering(tmp_path):
    truth, seeds, prediction = hand_case()
    square = np.zeros((6, 8), np.uint8)
    square[2:4, 2:4] = 1
    data = make_data(tmp_path / "data", {"a": truth, "c": square, "d": square})
    second = truth.copy()
    second[:, 3] = 1                          # RUN2 wrong on column 3, right where RUN is wrong
    other_seeds = seeds.copy()
    other_seeds[:, 2] = 0                     # RUN2's seeds differ on 4 pixels
    run = make_run(tmp_path / "run", {"a": prediction, "c": square, "d": square},
                   {"a": seeds, "c": np.full_like(square, 255), "d": np.full_like(square, 255)})
    run2 = make_run(tmp_path / "run2", {"a": second, "c": np.zeros_like(square)},  # no d
                    {"a": other_seeds})
    result = analyze_run(data, run, against=run2, show_progress=False)
    assert result["images"] == 2 and result["skipped"] == 1
    assert result["skipped_no_pseudo_label_in_run"] == 0
    assert result["skipped_no_pseudo_label_in_against"] == 1
    assert result["against_seeds_differ"] == pytest.approx(100 * 4 / (40 + 48))

    a = result["per_image"][0]                # worst first: a (77.5) before c (100)
    assert a["id"] == "a"
    assert a["accuracy"] == pytest.approx(77.5) and a["against_accuracy"] == pytest.approx(90.0)
    assert a["only_run"] == pytest.approx(10.0)                       # column 3
    assert a["only_against"] == pytest.approx(22.5)                   # columns 4, 8, pixel (0, 0)
    assert a["splits"]["unknown"]["only_run"] == pytest.approx(100 * 4 / 24)
    assert a["splits"]["unknown"]["only_against"] == pytest.approx(100 * 8 / 24)
    assert a["splits"]["seeded"]["only_against"] == pytest.approx(100 * 1 / 16)
    assert a["difference"] == pytest.approx(-12.5)
    assert [r["id"] for r in result["by_difference"]] == ["a", "c"]   # RUN loses most first
    assert result["by_difference"][1]["difference"] == pytest.approx(100 * 4 / 48)

    # Overall: a's 40 pixels and c's 48 (c: RUN right everywhere, RUN2 wrong on the square).
    overall = result["splits"]["all"]
    assert overall["only_run"] == pytest.approx(100 * (4 + 4) / 88)
    assert overall["only_against"] == pytest.approx(100 * 9 / 88)
    assert overall["against_accuracy"] == pytest.approx(100 * (36 + 44) / 88)
    text = format_report(result)
    assert "RUN loses most" in text and "+against" in text and "first run's seeds" in text


def test_matches_direct_masks_on_random_maps(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.kron(rng.integers(0, 3, (4, 6)), np.ones((5, 5), np.int64)).astype(np.uint8)
    truth[rng.random((20, 30)) < 0.05] = 255
    prediction = np.where(rng.random((20, 30)) < 0.7, truth, rng.integers(0, 3, (20, 30)))
    prediction = prediction.astype(np.uint8)
    second = rng.integers(0, 3, (20, 30)).astype(np.uint8)
    seeds = np.where(rng.random((20, 30)) < 0.4, truth, 255).astype(np.uint8)
    data = make_data(tmp_path / "data", {"r": truth}, ("background", "x", "y"))
    run = make_run(tmp_path / "run", {"r": prediction}, {"r": seeds})
    run2 = make_run(tmp_path / "run2", {"r": second}, {})
    result = analyze_run(data, run, against=run2, show_progress=False)

    valid = truth != 255
    band = boundary_band(truth)
    seeded = seeds != 255
    masks = {"all": valid, "seeded": seeded, "unknown": ~seeded, "band": band,
             "interior": ~band, "seeded_band": seeded & band, "seeded_interior": seeded & ~band,
             "unknown_band": ~seeded & band, "unknown_interior": ~seeded & ~band}
    assert set(masks) == set(SPLITS)
    right, right2 = prediction == truth, second == truth
    for name, mask in masks.items():
        mask = mask & valid
        assert mask.sum() > 10, name
        stats = result["splits"][name]
        assert stats["pixels"] == mask.sum()
        assert stats["accuracy"] == pytest.approx(100 * right[mask].mean())
        assert stats["against_accuracy"] == pytest.approx(100 * right2[mask].mean())
        assert stats["only_run"] == pytest.approx(100 * (right & ~right2)[mask].mean())
        assert stats["only_against"] == pytest.approx(100 * (~right & right2)[mask].mean())
    for k, name in enumerate(["background", "x", "y"]):
        mask = truth == k
        assert result["per_class"][name]["accuracy"] == pytest.approx(100 * right[mask].mean())
    assert result["against_seeds_differ"] is None


def test_missing_and_mis_sized_files_name_the_file(hand, tmp_path):
    data, run = hand
    with pytest.raises(DataError, match="nowhere: run folder does not exist"):
        analyze_run(data, tmp_path / "nowhere", show_progress=False)
    (tmp_path / "bare").mkdir()
    with pytest.raises(DataError, match="pseudo_labels folder is missing"):
        analyze_run(data, tmp_path / "bare", show_progress=False)
    (tmp_path / "bare" / "pseudo_labels").mkdir()
    with pytest.raises(DataError, match="no pseudo label for any image"):
        analyze_run(data, tmp_path / "bare", show_progress=False)
    (run / "seeds" / "a.png").unlink()
    with pytest.raises(DataError, match=r"seeds/a\.png: seed file .* is missing"):
        analyze_run(data, run, show_progress=False)
    write_label_png(run / "seeds" / "a.png", np.zeros((4, 9), np.uint8))
    with pytest.raises(DataError, match=r"seeds/a\.png: size 9x4 differs from the ground truth"):
        analyze_run(data, run, show_progress=False)
    with pytest.raises(DataError, match="run2: run folder does not exist"):
        analyze_run(data, run, against=tmp_path / "run2", show_progress=False)
    (data / "SegmentationClass" / "a.png").unlink()
    with pytest.raises(DataError, match=r"a\.png: ground-truth file is missing"):
        analyze_run(data, run, show_progress=False)


def test_cli_prints_the_table_and_writes_json(hand, tmp_path, capsys):
    data, run = hand
    assert main(["analyze", "--data", str(data), "--run", str(run)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((run / "analysis.json").read_text())
    assert result["images"] == 1 and result["splits"]["all"]["accuracy"] == pytest.approx(77.5)
    assert "1 skipped" in printed and "unknown∩band" in printed and "unk→bg" in printed
    assert "worst 1 images by pixel accuracy" in printed and "per ground-truth class" in printed
    assert not list(run.glob(".analysis.*"))                      # no temporary file left

    run2 = make_run(tmp_path / "run2", {"a": hand_case()[0]}, {})
    out = tmp_path / "elsewhere" / "cmp.json"
    assert main(["analyze", "--data", str(data), "--run", str(run), "--against", str(run2),
                 "--out", str(out)]) == 0
    assert "RUN loses most" in capsys.readouterr().out
    assert json.loads(out.read_text())["by_difference"][0]["difference"] == pytest.approx(-22.5)

    (run / "seeds" / "a.png").unlink()
    assert main(["analyze", "--data", str(data), "--run", str(run)]) == 2
    assert "seeds/a.png: seed file" in capsys.readouterr().err


def test_cli_help_lists_analyze(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    assert "--against RUN2" in capsys.readouterr().out
