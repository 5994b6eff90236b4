"""Tests for graphwsss.postprocess.instances: box instances, PNG and COCO round trips."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from graphwsss.data import Box, read_label_png
from graphwsss.postprocess import instances_from_boxes, instances_to_coco, write_instance_png

V = 255

# Box 0: a large class-1 box; box 1: a small class-1 box inside it (wins its pixels);
# box 2: a class-2 box overlapping box 0 (class-1 pixels there stay with box 0).
BOXES = [Box(0, 0, 6, 4, 1), Box(1, 1, 3, 3, 1), Box(4, 2, 8, 5, 2)]
LABEL = np.array([[1, 1, 1, 0, 1, 1, 0, 0],
                  [1, 1, 1, 0, 0, 1, 0, 0],
                  [0, 1, V, 0, 2, 1, 2, 2],
                  [0, 0, 0, 0, 2, 2, 2, 0],
                  [1, 0, 0, 0, 2, 0, 2, 1]], dtype=np.uint8)
EXPECTED = np.array([[1, 1, 1, 0, 1, 1, 0, 0],
                     [1, 2, 2, 0, 0, 1, 0, 0],
                     [0, 2, V, 0, 3, 1, 3, 3],
                     [0, 0, 0, 0, 3, 3, 3, 0],
                     [0, 0, 0, 0, 3, 0, 3, 0]], dtype=np.uint8)


def test_overlapping_boxes_smaller_wins_and_void_kept():
    for order in ([0, 1, 2], [2, 1, 0]):
        boxes = [BOXES[i] for i in order]
        instance = instances_from_boxes(LABEL, boxes)
        assert instance.dtype == np.uint8
        # Ids follow the given box order.
        remap = np.arange(256, dtype=np.uint8)
        for new_index, old_index in enumerate(order):
            remap[old_index + 1] = new_index + 1
        np.testing.assert_array_equal(instance, remap[EXPECTED])


def test_png_round_trip(tmp_path):
    instance = instances_from_boxes(LABEL, BOXES)
    path = write_instance_png(tmp_path / "a.png", instance)
    np.testing.assert_array_equal(read_label_png(path), instance)


def test_coco_results_decode_to_the_instances():
    instance = instances_from_boxes(LABEL, BOXES)
    results = instances_to_coco("img_7", instance, LABEL, BOXES, *LABEL.shape)
    results = json.loads(json.dumps(results))                     # JSON-serialisable
    assert [r["category_id"] for r in results] == [1, 1, 2]
    rebuilt = np.zeros_like(instance)
    for index, result in enumerate(results):
        assert result["image_id"] == "img_7" and result["score"] == 1.0
        rle = dict(result["segmentation"], counts=result["segmentation"]["counts"].encode())
        mask = coco_mask.decode(rle).astype(bool)
        assert result["area"] == mask.sum() == int(coco_mask.area(rle))
        np.testing.assert_allclose(result["bbox"], coco_mask.toBbox(rle))
        assert not (rebuilt[mask]).any()                         # instances are disjoint
        rebuilt[mask] = index + 1
    np.testing.assert_array_equal(rebuilt, np.where(EXPECTED == V, 0, EXPECTED))
    assert results[1]["bbox"] == [1.0, 1.0, 2.0, 2.0]


def test_empty_instance_uses_its_box():
    label = np.zeros((5, 8), dtype=np.uint8)
    instance = instances_from_boxes(label, BOXES)
    assert (instance == 0).all()
    results = instances_to_coco("x", instance, label, BOXES, 5, 8)
    assert [r["bbox"] for r in results] == [[0, 0, 6, 4], [1, 1, 2, 2], [4, 2, 4, 3]]
    assert all(r["area"] == 0 for r in results)


def test_inconsistent_inputs_raise():
    instance = instances_from_boxes(LABEL, BOXES)
    with pytest.raises(ValueError, match=r"\(6, 8\)"):
        instances_to_coco("x", instance, LABEL, BOXES, 6, 8)
    with pytest.raises(ValueError, match="class"):
        instances_to_coco("x", instance, np.where(LABEL == 2, 1, LABEL).astype(np.uint8),
                          BOXES, 5, 8)
    with pytest.raises(ValueError, match="254"):
        instances_from_boxes(LABEL, [BOXES[0]] * 255)
