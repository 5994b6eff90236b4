"""Tests for graphwsss.seeds.fusion on hand-made label maps (equations 3.4–3.5)."""

import numpy as np
import pytest

from graphwsss.data import Box
from graphwsss.seeds.fusion import (fuse_box_and_cam_seeds, select_confident_seeds,
                                    top_fraction_cam_seeds)

V = 255


def test_fusion_keeps_agreement_inside_box_and_box_seeds_outside():
    box = Box(1, 0, 4, 3, 1)                  # columns 1..3, rows 0..2
    box_seeds = np.array([[0, 1, 1, V, 0],
                          [0, 1, 1, 1, 0],
                          [0, V, 1, 1, 0],
                          [0, 0, 0, 0, 0]])
    cam_seeds = np.array([[1, 1, 0, V, 1],    # outside the box the CAM is ignored
                          [0, 1, 1, 0, 0],
                          [0, 1, 1, V, 0],
                          [1, 0, 0, 0, 0]])
    expected = np.array([[0, 1, V, V, 0],
                         [0, 1, 1, V, 0],
                         [0, V, 1, V, 0],
                         [0, 0, 0, 0, 0]])
    fused = fuse_box_and_cam_seeds(box_seeds, cam_seeds, [box])
    assert fused.dtype == np.uint8
    np.testing.assert_array_equal(fused, expected)


def test_fusion_uses_box_seeds_where_cam_misses_the_class():
    box = Box(0, 0, 2, 2, 2)
    box_seeds = np.array([[2, V, 0],
                          [2, 2, 0]])
    cam_seeds = np.array([[0, 0, 0],           # no pixel of class 2 inside the box
                          [1, 0, 2]])          # (a 2 outside the box does not count)
    np.testing.assert_array_equal(fuse_box_and_cam_seeds(box_seeds, cam_seeds, [box]), box_seeds)


def test_fusion_smaller_box_decides_overlap():
    big, small = Box(0, 0, 4, 2, 1), Box(2, 0, 4, 2, 2)
    box_seeds = np.array([[1, 1, 2, 2],
                          [1, V, 2, V]])
    cam_seeds = np.array([[1, 0, 1, 1],        # the CAM has no class 2 in the small box
                          [1, 1, 1, 1]])
    expected = np.array([[1, V, 2, 2],         # so the small box keeps its box seeds,
                         [1, V, 2, V]])        # although the big box's rule would void them
    for boxes in ([big, small], [small, big]):
        np.testing.assert_array_equal(fuse_box_and_cam_seeds(box_seeds, cam_seeds, boxes),
                                      expected)


def test_confident_selection():
    fused = np.array([[0, 1, 1, V, 2]])
    box_seeds = np.array([[0, 1, V, V, V]])
    cam_confident = np.array([[1, V, 1, 2, 0]])
    np.testing.assert_array_equal(select_confident_seeds(fused, box_seeds, cam_confident),
                                  [[0, 1, 1, V, V]])


def test_top_fraction_per_argmax_class():
    cams = np.array([[[0.9, 0.8, 0.7, 0.6, 0.5, 0.0]],
                     [[0.1, 0.2, 0.3, 0.9, 0.95, 0.0]]], dtype=np.float32)
    # Class 3 holds pixels 0..2 (scores .9 .8 .7): ceil(0.4 * 3) = 2 kept.
    # Class 7 holds pixels 3, 4 (.9 .95): ceil(0.4 * 2) = 1 kept, the .95.
    # Pixel 5 has no evidence.
    seeds = top_fraction_cam_seeds(cams, [3, 7], fraction=0.4)
    assert seeds.dtype == np.uint8
    np.testing.assert_array_equal(seeds, [[3, 3, V, V, 7, V]])


def test_top_fraction_keeps_exactly_the_fraction_under_ties():
    cams = np.full((1, 2, 5), 0.5)
    seeds = top_fraction_cam_seeds(cams, [1], fraction=0.4)
    assert (seeds == 1).sum() == 4


def test_top_fraction_background_threshold():
    cams = np.array([[[0.05, 0.9, 0.5]]])
    seeds = top_fraction_cam_seeds(cams, [4], fraction=0.5, background_threshold=0.1)
    np.testing.assert_array_equal(seeds, [[0, 4, V]])


def test_top_fraction_fraction_bounds():
    cams = np.random.default_rng(0).random((2, 6, 7))
    assert (top_fraction_cam_seeds(cams, [1, 2], fraction=0.0) == V).all()
    full = top_fraction_cam_seeds(cams, [1, 2], fraction=1.0)
    np.testing.assert_array_equal(full, np.where(cams.argmax(0) == 0, 1, 2))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="shape"):
        fuse_box_and_cam_seeds(np.zeros((2, 3), int), np.zeros((3, 2), int), [])
    with pytest.raises(ValueError, match="integer"):
        select_confident_seeds(np.zeros((2, 2)), np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="class ids"):
        top_fraction_cam_seeds(np.zeros((2, 3, 3)), [1])
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_cam_seeds(np.zeros((1, 3, 3)), [1], fraction=1.5)
