"""The tightness prior of boxes as a background prior (docs/method.md §7)."""

from __future__ import annotations

import numpy as np
import pytest

from graphwsss.data.records import Box
from graphwsss.postprocess import tight_box_background, tight_box_mask

U = 255


def _seeds(box, rows=True, cols=True):
    seeds = np.zeros((10, 10), np.uint8)
    seeds[box.slices()] = U
    if rows:
        seeds[box.y0:box.y1, box.x0 + 1] = box.class_id      # one column crosses every row
    if cols:
        seeds[box.y0 + 1, box.x0:box.x1] = box.class_id      # one row crosses every column
    return seeds


def test_a_box_whose_seeds_cross_every_row_and_column_is_tight():
    box = Box(2, 2, 8, 8, 1)
    assert tight_box_mask([box], _seeds(box), 0.95)[box.slices()].all()
    assert not tight_box_mask([box], _seeds(box, cols=False), 0.95).any()
    assert not tight_box_mask([box], _seeds(box, rows=False), 0.95).any()
    assert tight_box_mask([box], _seeds(box, cols=False), 1 / 6).any()   # one column of six


def test_pixels_shared_with_a_box_that_is_not_tight_are_left_alone():
    tight, loose = Box(0, 0, 6, 6, 1), Box(4, 4, 10, 10, 2)
    seeds = _seeds(tight)
    seeds[loose.slices()] = U
    mask = tight_box_mask([tight, loose], seeds, 0.95)
    assert mask[0:4, 0:4].all() and not mask[4:6, 4:6].any() and not mask[8:, 8:].any()


def test_background_is_raised_on_unknown_pixels_of_tight_boxes_only():
    box = Box(2, 2, 8, 8, 1)
    seeds = _seeds(box)
    probs = np.full((2, 10, 10), 0.5, np.float32)
    out = tight_box_background(probs, [box], seeds, 4.0, 0.95)
    unknown = (seeds == U)
    assert np.allclose(out[0][unknown], 0.8) and np.allclose(out[1][unknown], 0.2)
    assert np.array_equal(out[:, ~unknown], probs[:, ~unknown])
    assert np.allclose(out.sum(0), 1.0)
    assert (probs == 0.5).all()                                        # input unchanged
    assert tight_box_background(probs, [box], seeds, 1.0, 0.95) is probs


def test_seeds_must_match_the_probabilities():
    with pytest.raises(ValueError, match="differ in size"):
        tight_box_background(np.ones((2, 4, 4), np.float32), [Box(0, 0, 2, 2, 1)],
                             np.zeros((5, 5), np.uint8), 4.0, 0.95)
