"""Tests for graphwsss.metrics.confusion against hand-computed confusion matrices."""

import json

import numpy as np
import pytest

from graphwsss.metrics import ConfusionMatrix

V = 255  # void

# Hand-worked 4x4 case: rows = gt, cols = pred.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, V, V],
               [2, 2, 2, 2]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, V],   # (1, 3): gt 1 predicted void -> a false negative of class 1
                 [2, 0, 1, 2],   # (2, 2), (2, 3): gt void -> skipped whatever the prediction
                 [2, 2, 2, 0]])


def test_hand_computed_matrix_and_iou():
    scores = ConfusionMatrix(num_classes=3)
    scores.update(PRED, GT)
    np.testing.assert_array_equal(scores.matrix, [[3, 1, 0], [0, 3, 0], [2, 0, 4]])
    assert scores.matrix.dtype == np.int64
    np.testing.assert_array_equal(scores.void_predictions, [0, 1, 0])
    # class 0: TP 3, gt 4, pred 5 -> 3/6; class 1: TP 3, gt 4 (one predicted void), pred 4 -> 3/5;
    # class 2: TP 4, gt 6, pred 4 -> 4/6
    np.testing.assert_allclose(scores.iou(), [3 / 6, 3 / 5, 4 / 6])
    assert scores.miou() == pytest.approx((3 / 6 + 3 / 5 + 4 / 6) / 3)
    assert scores.pixel_accuracy() == pytest.approx(10 / 14)


def test_summary_is_percent_with_names():
    scores = ConfusionMatrix(num_classes=3)
    scores.update(PRED, GT)
    summary = scores.summary(["background", "cow", "sheep"])
    assert summary["miou"] == pytest.approx(100 * (3 / 6 + 3 / 5 + 4 / 6) / 3)
    assert summary["per_class_iou"] == pytest.approx({"background": 50.0, "cow": 60.0,
                                                      "sheep": 100 * 4 / 6})
    assert summary["pixel_accuracy"] == pytest.approx(100 * 10 / 14)
    assert list(scores.summary()["per_class_iou"]) == ["0", "1", "2"]
    json.dumps(summary)


def test_void_prediction_counts_as_wrong():
    gt = np.ones((2, 2), dtype=np.uint8)
    scores = ConfusionMatrix(num_classes=2)
    scores.update(np.full((2, 2), V, dtype=np.uint8), gt)
    np.testing.assert_array_equal(scores.matrix, np.zeros((2, 2)))
    assert scores.iou()[1] == 0.0          # union = 4 gt pixels, TP = 0
    assert np.isnan(scores.iou()[0])        # background neither in gt nor prediction
    assert scores.miou() == 0.0
    assert scores.pixel_accuracy() == 0.0


def test_class_only_in_prediction_counts_as_zero():
    gt = np.zeros((4, 4), dtype=np.int64)
    pred = gt.copy()
    pred[0, 0] = 3
    scores = ConfusionMatrix(num_classes=4)
    scores.update(pred, gt)
    iou = scores.iou()
    assert iou[0] == pytest.approx(15 / 16)
    assert np.isnan(iou[1]) and np.isnan(iou[2])
    assert iou[3] == 0.0
    assert scores.miou() == pytest.approx((15 / 16 + 0.0) / 2)
    per_class = scores.summary()["per_class_iou"]
    assert per_class["1"] is None and per_class["2"] is None and per_class["3"] == 0.0


def test_empty_prediction_all_background():
    gt = np.zeros((4, 4), dtype=np.int64)
    gt[1:3, 1:3] = 1
    scores = ConfusionMatrix(num_classes=3)
    scores.update(np.zeros_like(gt), gt)
    np.testing.assert_allclose(scores.iou(), [12 / 16, 0.0, np.nan])
    assert scores.miou() == pytest.approx(0.375)


def test_empty_ground_truth_all_background():
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[1:3, 1:3] = 1
    scores = ConfusionMatrix(num_classes=3)
    scores.update(pred, np.zeros_like(pred))
    np.testing.assert_allclose(scores.iou(), [12 / 16, 0.0, np.nan])
    assert scores.miou() == pytest.approx(0.375)


def test_all_void_ground_truth_is_undefined():
    scores = ConfusionMatrix(num_classes=3)
    scores.update(np.ones((4, 4), dtype=np.int64), np.full((4, 4), V))
    assert scores.matrix.sum() == 0
    assert np.isnan(scores.iou()).all()
    assert np.isnan(scores.miou()) and np.isnan(scores.pixel_accuracy())
    summary = scores.summary()
    assert summary["miou"] is None and summary["pixel_accuracy"] is None
    assert all(value is None for value in summary["per_class_iou"].values())
    json.dumps(summary)


def test_nothing_accumulated_is_undefined():
    assert np.isnan(ConfusionMatrix(num_classes=2).miou())


def test_merge_equals_single_accumulation():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(6):
        gt = rng.integers(0, 5, size=(7, 9))
        gt[rng.random(gt.shape) < 0.2] = V
        pred = rng.integers(0, 5, size=(7, 9))
        pred[rng.random(pred.shape) < 0.1] = V
        pairs.append((pred, gt))
    single, first, second = (ConfusionMatrix(num_classes=5) for _ in range(3))
    for index, (pred, gt) in enumerate(pairs):
        single.update(pred, gt)
        (first if index < 3 else second).update(pred, gt)
    assert first.merge(second) is first
    np.testing.assert_array_equal(first.matrix, single.matrix)
    np.testing.assert_array_equal(first.void_predictions, single.void_predictions)
    np.testing.assert_allclose(first.iou(), single.iou())
    assert first.miou() == single.miou()


def test_matches_a_direct_count():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 4, size=(30, 20))
    gt[:3] = V
    pred = rng.integers(0, 4, size=(30, 20))
    scores = ConfusionMatrix(num_classes=4)
    scores.update(pred.astype(np.uint8), gt.astype(np.uint8))
    labelled = gt != V
    for c in range(4):
        intersection = np.sum((pred == c) & (gt == c) & labelled)
        union = np.sum(((pred == c) | (gt == c)) & labelled)
        assert scores.iou()[c] == pytest.approx(intersection / union)
        for p in range(4):
            assert scores.matrix[c, p] == np.sum((gt == c) & (pred == p) & labelled)


def test_reset():
    scores = ConfusionMatrix(num_classes=3)
    scores.update(PRED, GT)
    scores.reset()
    assert scores.matrix.sum() == 0 and scores.void_predictions.sum() == 0


def test_shape_mismatch_names_both_shapes():
    scores = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        scores.update(np.zeros((4, 4), dtype=np.int64), np.zeros((4, 5), dtype=np.int64))


@pytest.mark.parametrize("bad", [3, 7, -1, 254])
def test_gt_out_of_range_raises(bad):
    gt = np.zeros((2, 2), dtype=np.int64)
    gt[0, 0] = bad
    with pytest.raises(ValueError, match="gt"):
        ConfusionMatrix(num_classes=3).update(np.zeros_like(gt), gt)


def test_pred_out_of_range_raises():
    pred = np.zeros((2, 2), dtype=np.int64)
    pred[1, 1] = 4
    with pytest.raises(ValueError, match="pred"):
        ConfusionMatrix(num_classes=3).update(pred, np.zeros_like(pred))


def test_bad_inputs_raise():
    scores = ConfusionMatrix(num_classes=3)
    with pytest.raises(TypeError, match="integer"):
        scores.update(np.zeros((2, 2), dtype=np.float32), np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="np.ndarray"):
        scores.update([[0, 1]], np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="2-D"):
        scores.update(np.zeros((1, 2, 2), dtype=np.int64), np.zeros((1, 2, 2), dtype=np.int64))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(num_classes=0)
    with pytest.raises(ValueError, match="ignore_index"):
        ConfusionMatrix(num_classes=3, ignore_index=2)
    with pytest.raises(ValueError, match="class names"):
        ConfusionMatrix(num_classes=3).summary(["a", "b"])
    with pytest.raises(ValueError, match="merge"):
        ConfusionMatrix(num_classes=3).merge(ConfusionMatrix(num_classes=4))
    with pytest.raises(TypeError):
        ConfusionMatrix(num_classes=3).merge(np.zeros((3, 3)))


def test_custom_ignore_index():
    gt = np.array([[0, 1], [-1, 1]])
    pred = np.array([[0, 1], [1, 0]])
    scores = ConfusionMatrix(num_classes=2, ignore_index=-1)
    scores.update(pred, gt)
    np.testing.assert_array_equal(scores.matrix, [[1, 0], [1, 1]])
