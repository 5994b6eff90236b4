"""GrabCut started from the pseudo label (docs/method.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from graphwsss.data.records import Box
from graphwsss.postprocess import grabcut_from_label, meets_box

RED, BLUE = (200, 30, 30), (30, 60, 190)


def _object_image(seed=0):
    """A red disc with a 2-pixel-wide leg down to row 57 on a blue background, with noise;
    the box (rows 8..57, columns 15..52) is tight around disc and leg."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 72), bool)
    rows, cols = np.mgrid[:64, :72]
    truth |= (rows - 25) ** 2 + (cols - 35) ** 2 <= 17 ** 2     # rows 8..42, cols 18..52
    truth[25:58, 20:22] = True                                  # the thin leg
    truth[25, 15:18] = True                                     # reaches the box's left side
    image = np.where(truth[..., None], RED, BLUE).astype(np.int16)
    image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
    return image, truth, Box(15, 8, 53, 58, 1)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_the_thin_leg_a_blob_lost_comes_back():
    image, truth, box = _object_image()
    blob = np.zeros(truth.shape, np.uint8)
    blob[10:45, 17:53] = 1                # a node-resolution blob: the disc's box, no leg
    label, taken = grabcut_from_label(image, blob, [box], iterations=5, coverage=0.95)
    assert taken == 1
    assert _iou(label == 1, truth) > 0.95 > _iou(blob == 1, truth) + 0.1
    assert (label[45:58, 20:22] == 1).mean() > 0.9                     # the leg
    assert (label[:, :15] == 0).all() and (label[58:] == 0).all()       # nothing outside


def test_a_result_that_no_longer_meets_the_box_is_not_taken():
    image, truth, _ = _object_image()
    loose = Box(4, 2, 70, 62, 1)          # far larger than the object: GrabCut's object leaves
    start = np.zeros(truth.shape, np.uint8)  # its sides empty, so it fails the tightness test
    start[loose.slices()] = 1
    label, taken = grabcut_from_label(image, start, [loose], iterations=5, coverage=0.95)
    assert taken == 0 and (label == start).all()
    label, taken = grabcut_from_label(image, start, [loose], iterations=5, coverage=0.5)
    assert taken == 1 and _iou(label == 1, truth) > 0.9


def test_boxes_without_their_class_in_the_label_are_left_alone():
    image, truth, box = _object_image()
    start = np.zeros(truth.shape, np.uint8)
    label, taken = grabcut_from_label(image, start, [box], iterations=5, coverage=0.95)
    assert taken == 0 and (label == 0).all()


def test_the_smaller_box_wins_where_boxes_overlap():
    image, truth, box = _object_image()
    inner = Box(25, 15, 45, 35, 2)        # inside the disc: all red, nothing to separate there
    start = (truth * 1).astype(np.uint8)
    start[inner.slices()] = 2
    label, _ = grabcut_from_label(image, start, [inner, box], iterations=3, coverage=0.5)
    assert (label[inner.slices()] == 2).all()
    assert (label[truth & (start == 1)] == 1).mean() > 0.95


def test_meets_box_is_the_tightness_test():
    mask = np.zeros((4, 5), bool)
    mask[:, 2] = True                     # every row, one column of five
    assert meets_box(mask, 0.2) and not meets_box(mask, 0.5)
    assert not meets_box(np.zeros((0, 3), bool), 0.1)


def test_mismatched_sizes_and_no_iterations_are_refused():
    image, truth, box = _object_image()
    with pytest.raises(ValueError, match="differ in size"):
        grabcut_from_label(image, np.zeros((3, 3), np.uint8), [box], 5, 0.95)
    with pytest.raises(ValueError, match="at least 1"):
        grabcut_from_label(image, truth.astype(np.uint8), [box], 0, 0.95)
