import numpy as np
import pytest

from graphwsss.data.records import Point
from graphwsss.seeds.sparse import (expand_to_superpixels, merge_seeds, points_to_map,
                                    superpixel_expansion)


def test_expansion_fills_single_class_superpixels_and_keeps_conflicts_sparse():
    segments = np.array([[0, 0, 1, 1],
                         [0, 0, 1, 1],
                         [2, 2, 3, 3]])
    sparse = np.full((3, 4), 255, np.uint8)
    sparse[0, 0] = 1                  # segment 0: class 1 only
    sparse[0, 2], sparse[1, 3] = 2, 0  # segment 1: classes 2 and 0 -> conflict
    sparse[2, 0] = sparse[2, 1] = 3   # segment 2: class 3 twice
    expanded = expand_to_superpixels(sparse, segments)
    assert expanded.tolist() == [[1, 1, 2, 255],
                                 [1, 1, 255, 0],
                                 [3, 3, 255, 255]]


def test_points_become_a_sparse_map_and_outside_points_fail():
    label = points_to_map([Point(x=2, y=1, class_id=4)], 3, 5)
    assert label[1, 2] == 4 and (label != 255).sum() == 1
    with pytest.raises(ValueError, match="img7.*outside"):
        points_to_map([Point(x=5, y=0, class_id=1)], 3, 5, image_id="img7")


def test_merge_prefers_the_primary_seeds():
    primary = np.array([[1, 255], [255, 0]], np.uint8)
    fallback = np.array([[2, 2], [255, 2]], np.uint8)
    assert merge_seeds(primary, fallback).tolist() == [[1, 2], [255, 0]]
    with pytest.raises(ValueError, match="differ"):
        merge_seeds(primary, fallback[:1])


def test_superpixel_expansion_follows_image_regions():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = 255
    sparse = np.full((40, 40), 255, np.uint8)
    sparse[20, 5] = 1
    sparse[20, 35] = 2
    for method in ("slic", "felzenszwalb"):
        expanded = superpixel_expansion(image, sparse, method=method, segments=4)
        assert (expanded[:, :20][expanded[:, :20] != 255] == 1).all()
        assert (expanded[:, 20:][expanded[:, 20:] != 255] == 2).all()
        assert (expanded == 1).sum() > 50 and (expanded == 2).sum() > 50
