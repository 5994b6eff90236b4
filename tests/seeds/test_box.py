import numpy as np

from graphwsss.data import Box
from graphwsss.seeds.box import fill_boxes, paint_order


def test_smaller_box_wins_overlap():
    boxes = [Box(0, 0, 3, 3, 2), Box(1, 1, 6, 5, 1)]
    assert paint_order(boxes) == [1, 0]
    label = fill_boxes(boxes, 5, 6)
    expected = np.zeros((5, 6), np.uint8)
    expected[1:5, 1:6] = 1
    expected[0:3, 0:3] = 2
    np.testing.assert_array_equal(label, expected)


def test_no_boxes_is_all_background():
    assert not fill_boxes([], 4, 4).any()
