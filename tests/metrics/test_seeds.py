"""Tests for graphwsss.metrics.seeds against hand-counted seed maps."""

import json

import numpy as np
import pytest

from graphwsss.metrics import SeedQuality

V = 255

GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [V, V, 2, 2],
               [2, 2, 2, 2]])
SEED = np.array([[0, V, 1, 0],    # (0, 3) is wrong: gt 1
                 [V, V, V, V],
                 [1, V, 2, V],    # (2, 0) lies on void: not judged
                 [V, 2, V, V]])


def test_hand_counted_precision_and_coverage():
    quality = SeedQuality()
    quality.update(SEED, GT)
    assert (quality.correct, quality.labelled, quality.valid) == (4, 5, 14)
    assert quality.precision() == pytest.approx(4 / 5)
    assert quality.coverage() == pytest.approx(5 / 14)
    assert quality.summary() == pytest.approx({"seed_precision": 80.0,
                                               "seed_coverage": 100 * 5 / 14})


def test_perfect_dense_seeds():
    quality = SeedQuality()
    quality.update(np.where(GT == V, 0, GT), GT)
    assert quality.precision() == 1.0 and quality.coverage() == 1.0


def test_no_seeds():
    quality = SeedQuality()
    quality.update(np.full_like(GT, V), GT)
    assert np.isnan(quality.precision())
    assert quality.coverage() == 0.0
    summary = quality.summary()
    assert summary == {"seed_precision": None, "seed_coverage": 0.0}
    json.dumps(summary)


def test_all_void_ground_truth():
    quality = SeedQuality()
    quality.update(np.zeros((3, 3), dtype=np.uint8), np.full((3, 3), V, dtype=np.uint8))
    assert quality.summary() == {"seed_precision": None, "seed_coverage": None}


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(0)
    pairs = [(np.where(rng.random((6, 5)) < 0.3, rng.integers(0, 3, (6, 5)), V),
              np.where(rng.random((6, 5)) < 0.1, V, rng.integers(0, 3, (6, 5))))
             for _ in range(5)]
    single, first, second = SeedQuality(), SeedQuality(), SeedQuality()
    for index, (seed, gt) in enumerate(pairs):
        single.update(seed, gt)
        (first if index % 2 else second).update(seed, gt)
    assert first.merge(second) is first
    assert (first.correct, first.labelled, first.valid) == \
        (single.correct, single.labelled, single.valid)
    assert first.summary() == single.summary()


def test_bad_inputs_raise():
    quality = SeedQuality()
    with pytest.raises(ValueError, match=r"seed has shape \(4, 4\), gt has shape \(3, 4\)"):
        quality.update(SEED, GT[:3])
    with pytest.raises(TypeError):
        quality.update(SEED.astype(float), GT)
    with pytest.raises(ValueError, match="merge"):
        quality.merge(SeedQuality(ignore_index=0))


def test_images_naming_one_class_are_not_counted_as_single_class():
    from graphwsss.metrics import SingleClassImages

    counts = SingleClassImages()
    background = np.zeros((4, 4), np.uint8)
    counts.update("empty", background, background, classes_named=1)
    counts.update("failed", background, background)
    other = SingleClassImages()
    other.update("fine", np.eye(4, dtype=np.uint8), np.eye(4, dtype=np.uint8))
    summary = counts.merge(other).summary()
    assert summary["single_class_labels"] == 1 and summary["single_class_label_ids"] == ["failed"]
    assert summary["seeds_single_class"] == 1 and summary["images_one_class_named"] == 1
