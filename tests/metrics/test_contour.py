"""Tests for graphwsss.metrics.contour: boundary maps by hand, then F-scores of simple shapes."""

import json

import numpy as np
import pytest

from graphwsss.metrics import ContourFScore, boundary_map, tolerance_radius
from graphwsss.metrics.contour import disk

V = 255


def square(size, top, left, side, label=1, background=0):
    labels = np.full((size, size), background, dtype=np.int64)
    labels[top:top + side, left:left + side] = label
    return labels


def test_boundary_map_of_a_2x2_square_by_hand():
    mask = square(5, 1, 1, 2).astype(bool)
    # A pixel is boundary if it differs from its right, bottom or bottom-right neighbour.
    expected = np.array([[1, 1, 1, 0, 0],
                         [1, 0, 1, 0, 0],
                         [1, 1, 1, 0, 0],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(mask), expected)


def test_boundary_map_at_the_image_border():
    mask = np.zeros((3, 3), dtype=bool)
    mask[:, 2] = True  # the last column compares only with the row below: no boundary there
    expected = np.zeros((3, 3), dtype=bool)
    expected[:, 1] = True
    np.testing.assert_array_equal(boundary_map(mask), expected)
    assert not boundary_map(np.ones((4, 4), dtype=bool)).any()
    assert not boundary_map(np.zeros((4, 4), dtype=bool)).any()


@pytest.mark.parametrize("side", [1, 2, 3, 6])
def test_boundary_of_a_square_has_4k_pixels(side):
    assert boundary_map(square(20, 5, 7, side).astype(bool)).sum() == 4 * side


def test_tolerance_radius():
    assert tolerance_radius(5, 5) == 1          # ceil(0.057)
    assert tolerance_radius(480, 640) == 7      # ceil(0.008 * 800) = ceil(6.4)
    assert tolerance_radius(300, 400) == 4      # ceil(0.008 * 500) = ceil(4.0)
    assert tolerance_radius(300, 400, tolerance=0.01) == 5


def test_disk_matches_skimage():
    morphology = pytest.importorskip("skimage.morphology")
    for radius in range(1, 8):
        np.testing.assert_array_equal(disk(radius), morphology.disk(radius))


def test_identical_masks_score_100():
    labels = square(30, 4, 6, 10, label=1)
    labels[20:27, 18:28] = 2
    scores = ContourFScore(num_classes=3)
    scores.update(labels, labels)
    np.testing.assert_allclose(scores.per_class(), [np.nan, 1.0, 1.0])
    summary = scores.summary(["background", "cow", "sheep"])
    assert summary["contour_f"] == 100.0
    assert summary["per_class_contour_f"] == {"background": None, "cow": 100.0, "sheep": 100.0}
    json.dumps(summary)


@pytest.mark.parametrize("shift", [(0, 1), (1, 0), (0, -1), (-1, 0)])
def test_one_pixel_shift_is_within_tolerance(shift):
    gt = square(50, 20, 20, 8)   # radius ceil(0.008 * 70.7) = 1
    pred = square(50, 20 + shift[0], 20 + shift[1], 8)
    scores = ContourFScore(num_classes=2)
    scores.update(pred, gt)
    assert scores.mean() == 1.0


def test_diagonal_shift_against_a_cross_shaped_disc_by_hand():
    # 5x5 image: radius 1, the disc is the 4-neighbour cross. Prediction = gt moved by (+1, +1).
    # gt boundary   {(0,0),(0,1),(0,2),(1,0),(1,2),(2,0),(2,1),(2,2)}
    # pred boundary {(1,1),(1,2),(1,3),(2,1),(2,3),(3,1),(3,2),(3,3)}
    # (3,3) is 2 steps from every gt boundary pixel, (0,0) from every predicted one: 7/8 each.
    scores = ContourFScore(num_classes=2)
    scores.update(square(5, 2, 2, 2), square(5, 1, 1, 2))
    assert (scores.pred_total[1], scores.pred_matched[1]) == (8, 7)
    assert (scores.gt_total[1], scores.gt_matched[1]) == (8, 7)
    assert scores.per_class()[1] == pytest.approx(7 / 8)


def test_far_shift_scores_zero_for_that_class():
    gt = square(50, 5, 5, 6, label=1)
    gt[30:40, 30:40] = 2
    pred = square(50, 5, 5, 6, label=1)
    pred[30:40, 5:15] = 2   # class 2 moved 25 px to the left, far beyond 1 px
    scores = ContourFScore(num_classes=3)
    scores.update(pred, gt)
    np.testing.assert_allclose(scores.per_class(), [np.nan, 1.0, 0.0])
    assert scores.mean() == pytest.approx(0.5)
    assert scores.summary()["contour_f"] == pytest.approx(50.0)


def test_precision_recall_asymmetry():
    gt = square(50, 10, 10, 4)     # 16 boundary pixels
    pred = gt.copy()
    pred[40, 40] = 1               # a lone false pixel far away: 4 more predicted boundary pixels
    scores = ContourFScore(num_classes=2)
    scores.update(pred, gt)
    assert (scores.pred_total[1], scores.pred_matched[1]) == (20, 16)
    assert (scores.gt_total[1], scores.gt_matched[1]) == (16, 16)
    assert scores.precision()[1] == pytest.approx(0.8)
    assert scores.recall()[1] == 1.0
    assert scores.per_class()[1] == pytest.approx(2 * 0.8 / 1.8)
    # Swapping the roles swaps precision and recall; F is symmetric.
    swapped = ContourFScore(num_classes=2)
    swapped.update(gt, pred)
    assert swapped.precision()[1] == 1.0 and swapped.recall()[1] == pytest.approx(0.8)
    assert swapped.per_class()[1] == pytest.approx(scores.per_class()[1])


def test_missing_prediction_or_ground_truth_scores_zero():
    gt = square(20, 5, 5, 4, label=1)
    pred = square(20, 5, 5, 4, label=2)   # class 1 never predicted, class 2 never in gt
    scores = ContourFScore(num_classes=4)
    scores.update(pred, gt)
    np.testing.assert_allclose(scores.per_class(), [np.nan, 0.0, 0.0, np.nan])
    assert scores.mean() == 0.0
    assert scores.summary()["per_class_contour_f"]["3"] is None


def test_empty_prediction_and_empty_ground_truth():
    labels = square(20, 5, 5, 4)
    background = np.zeros_like(labels)
    scores = ContourFScore(num_classes=2)
    scores.update(background, labels)
    assert scores.mean() == 0.0
    scores = ContourFScore(num_classes=2)
    scores.update(background, background)
    assert np.isnan(scores.mean())
    assert scores.summary()["contour_f"] is None


def test_background_option():
    gt = square(20, 5, 5, 4)
    scores = ContourFScore(num_classes=2, background=None)
    scores.update(gt, gt)
    np.testing.assert_allclose(scores.per_class(), [1.0, 1.0])


def test_boundary_pixels_on_void_are_dropped():
    gt = square(5, 1, 1, 2)
    gt[:, 0] = V
    pred = square(5, 1, 1, 2)
    pred[:, 0] = 1   # predicted class on void is "not the class"
    scores = ContourFScore(num_classes=2)
    scores.update(pred, gt)
    # The 8 hand-computed boundary pixels of the square minus (0,0), (1,0), (2,0) on void.
    assert scores.gt_total[1] == 5 and scores.pred_total[1] == 5
    assert scores.gt_matched[1] == 5 and scores.pred_matched[1] == 5


def test_prediction_inside_a_void_band_is_not_penalised():
    gt = np.zeros((60, 60), dtype=np.int64)
    gt[16:44, 16:44] = V           # 3 px void band around the object, as in the GrabCut set
    gt[19:41, 19:41] = 1
    pred = np.zeros_like(gt)
    pred[16:44, 16:44] = 1         # the prediction fills the band: 3 px > radius 1 off
    scores = ContourFScore(num_classes=2)
    scores.update(pred, gt)
    assert scores.mean() == 1.0


def test_all_void_ground_truth_is_excluded():
    scores = ContourFScore(num_classes=2)
    scores.update(square(10, 2, 2, 3), np.full((10, 10), V))
    assert scores.pred_total.sum() == 0 and np.isnan(scores.mean())


def test_void_prediction_is_no_class():
    gt = square(20, 5, 5, 4)
    pred = np.where(gt == 1, V, 0)
    scores = ContourFScore(num_classes=2)
    scores.update(pred, gt)
    assert scores.per_class()[1] == 0.0


def test_counts_accumulate_over_images_not_averaged():
    big, small = square(50, 10, 10, 10), square(50, 10, 10, 1)
    far_small = square(50, 40, 40, 1)
    scores = ContourFScore(num_classes=2)
    scores.update(big, big)               # 40 matched boundary pixels
    scores.update(far_small, small)       # 4 unmatched on each side
    assert scores.precision()[1] == pytest.approx(40 / 44)
    assert scores.recall()[1] == pytest.approx(40 / 44)


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(6):
        gt = np.zeros((24, 32), dtype=np.int64)
        pred = np.zeros_like(gt)
        for labels in (gt, pred):
            for label in (1, 2, 3):
                top, left = rng.integers(0, 18), rng.integers(0, 26)
                labels[top:top + rng.integers(2, 7), left:left + rng.integers(2, 7)] = label
        gt[rng.random(gt.shape) < 0.05] = V
        pairs.append((pred, gt))
    single, first, second = (ContourFScore(num_classes=4) for _ in range(3))
    for index, (pred, gt) in enumerate(pairs):
        single.update(pred, gt)
        (first if index < 2 else second).update(pred, gt)
    assert first.merge(second) is first
    for name in ("pred_total", "pred_matched", "gt_total", "gt_matched"):
        np.testing.assert_array_equal(getattr(first, name), getattr(single, name))
    np.testing.assert_array_equal(first.per_class(), single.per_class())
    assert first.summary() == single.summary()


def test_bad_inputs_raise():
    scores = ContourFScore(num_classes=3)
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(5, 6\)"):
        scores.update(np.zeros((5, 5), dtype=np.int64), np.zeros((5, 6), dtype=np.int64))
    with pytest.raises(ValueError, match="gt"):
        scores.update(np.zeros((5, 5), dtype=np.int64), np.full((5, 5), 3))
    with pytest.raises(ValueError, match="background"):
        ContourFScore(num_classes=3, background=3)
    with pytest.raises(ValueError, match="merge"):
        scores.merge(ContourFScore(num_classes=3, background=None))
    with pytest.raises(ValueError, match="2-D"):
        boundary_map(np.zeros((2, 2, 2), dtype=bool))
