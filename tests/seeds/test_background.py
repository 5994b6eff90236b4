import math

import numpy as np
import pytest

from graphwsss.seeds.background import add_background_seeds, background_share
from graphwsss.stages.cam import confident_cam_seeds

H, W = 40, 60
POINT = (20, 10)                      # (row, col) of a class-1 point on the left


def _points() -> np.ndarray:
    annotations = np.full((H, W), 255, np.uint8)
    annotations[POINT] = 1
    return annotations


def _cams(low: float = 0.3, high: float = 1.0) -> np.ndarray:
    """One class whose score falls with the distance from the point but never below ``low``:
    the CAM explains every pixel, so M'_I has no confident background."""
    rows, cols = np.indices((H, W))
    distance = np.hypot(rows - POINT[0], cols - POINT[1])
    return (low + (high - low) * np.exp(-distance / 20.0))[None].astype(np.float32)


def _distance_to_point() -> np.ndarray:
    rows, cols = np.indices((H, W))
    return np.hypot(rows - POINT[0], cols - POINT[1])


def test_cam_without_confident_background_still_gives_background_far_from_the_points():
    cams = _cams()
    seeds = np.where(_points() != 255, 1, confident_cam_seeds(cams, 0.4)).astype(np.uint8)
    assert not (seeds == 0).any()                       # the CAM alone says no background
    added = add_background_seeds(seeds, cams, _points(), fraction=0.2, min_distance=0.1)
    background = added == 0
    assert background.sum() == math.ceil(0.2 * H * W)  # the lowest 20% are all far and unknown
    assert (_distance_to_point()[background] > 0.1 * math.hypot(H, W)).all()
    # The lowest scores: every new background pixel scores below every remaining unknown one.
    score = cams[0]
    assert score[background].max() <= score[added == 255].min()
    assert np.array_equal(added[~background], seeds[~background])   # nothing else changes


def test_enough_background_leaves_the_seeds_unchanged():
    seeds = np.full((H, W), 255, np.uint8)
    seeds[:, -5:] = 0                                   # 5/60 of the image is background
    seeds[POINT] = 1
    assert background_share(seeds) >= 0.02
    assert add_background_seeds(seeds, _cams(), _points(), min_share=0.02) is seeds


def test_rank_based_rule_gives_the_same_seeds_for_a_uniformly_weak_cam():
    seeds = np.full((H, W), 255, np.uint8)
    seeds[POINT] = 1
    strong = add_background_seeds(seeds, _cams(0.3, 1.0), _points())
    weak = add_background_seeds(seeds, _cams(0.06, 0.09), _points())   # all above t_bg = 0.05
    assert (strong == 0).any() and np.array_equal(strong, weak)
    # A flat CAM ranks nothing: ties go to pixels far from the point (the right edge).
    flat = add_background_seeds(seeds, np.full((1, H, W), 0.5, np.float32), _points())
    assert (flat == 0).sum() == math.ceil(0.2 * H * W)
    assert _distance_to_point()[flat == 0].min() >= _distance_to_point()[flat == 255].max() - 1


def test_annotated_superpixels_and_labelled_pixels_are_kept():
    segments = np.zeros((H, W), np.int64)
    segments[:, W // 2:] = 1                            # segment 0 holds the point
    seeds = np.full((H, W), 255, np.uint8)
    seeds[POINT] = 1
    seeds[:, -2:] = 2                                   # another class's seeds at the far edge
    annotations = _points()
    annotations[0, W // 2 - 1] = 0                      # a background click excludes nothing
    added = add_background_seeds(seeds, _cams(), annotations, segments, fraction=0.6)
    assert not (added[segments == 0] == 0).any()
    assert (added[segments == 1] == 0).any()
    assert (added[:, -2:] == 2).all() and added[POINT] == 1


def test_image_runs_without_annotations_take_the_lowest_scores():
    seeds = np.full((H, W), 255, np.uint8)
    added = add_background_seeds(seeds, _cams(), fraction=0.1)
    assert (added == 0).sum() == math.ceil(0.1 * H * W)
    assert _cams()[0][added == 0].max() <= _cams()[0][added == 255].min()
    no_classes = add_background_seeds(seeds, np.zeros((0, H, W), np.float32), fraction=0.1)
    assert (no_classes == 0).sum() == math.ceil(0.1 * H * W)


def test_mismatched_shapes_fail():
    seeds = np.full((H, W), 255, np.uint8)
    with pytest.raises(ValueError, match="cams"):
        add_background_seeds(seeds, np.zeros((1, H, W + 1), np.float32))
    with pytest.raises(ValueError, match="annotations"):
        add_background_seeds(seeds, _cams(), np.full((H, W + 1), 255, np.uint8))
