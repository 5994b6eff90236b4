"""The working resolution (issue 14.6): samples larger than max_side shrink, and nothing of
their weak labels is lost."""

from __future__ import annotations

import numpy as np

from graphwsss.data.records import IGNORE_INDEX, Box, Point, Sample
from graphwsss.data.resize import ResizedDataset, downscale_sample, upscale_label, working_size


def _sample(height=2000, width=3000):
    scribble = np.full((height, width), IGNORE_INDEX, np.uint8)
    scribble[1000, 100:2900] = 1                    # a 1-px line: must survive the shrink
    scribble[100:1900, 2999] = 0
    label = np.zeros((height, width), np.uint8)
    label[500:1500, 1000:2000] = 3
    return Sample("big", np.zeros((height, width, 3), np.uint8),
                  boxes=[Box(1000, 500, 2000, 1500, 3), Box(2998, 1998, 3000, 2000, 1),
                         Box(0, 0, 2, 3000, 2)],
                  label=label, scribble=scribble,
                  points=[Point(2999, 1999, 1), Point(0, 0, 2), Point(1500, 1000, 3)])


def test_working_size_keeps_aspect_and_small_images():
    assert working_size(2000, 3000, 640) == (427, 640)
    assert working_size(321, 481, 640) == (321, 481)
    assert working_size(2000, 3000, 0) == (2000, 3000)
    assert working_size(1, 5000, 640) == (1, 640)


def test_downscale_boxes_points_scribbles_and_labels():
    sample, scale = downscale_sample(_sample(), 640)
    assert sample.image.shape == (427, 640, 3) and abs(scale - 427 / 2000) < 1e-9
    assert sample.original_size == (2000, 3000) and len(sample.original_boxes) == 3
    inner, corner, thin = sample.boxes
    assert (inner.x0, inner.y0, inner.x1, inner.y1, inner.class_id) == (213, 106, 427, 321, 3)
    # Clipped to the image and at least one pixel wide and high.
    assert (corner.x0, corner.x1, corner.y0, corner.y1) == (639, 640, 426, 427)
    assert thin.x1 - thin.x0 >= 1 and thin.y1 <= 427
    assert [(p.x, p.y, p.class_id) for p in sample.points] == [(639, 426, 1), (0, 0, 2),
                                                              (320, 213, 3)]
    assert sample.label.shape == sample.scribble.shape == (427, 640)
    assert set(np.unique(sample.label)) == {0, 3}
    line = sample.scribble[213]
    assert (line[22:619] == 1).all()                # every column of the line kept
    assert (sample.scribble[22:405, 639] == 0).all()
    assert set(np.unique(sample.scribble)) == {0, 1, IGNORE_INDEX}


def test_small_sample_is_untouched_and_labels_upscale_to_the_original_size():
    small = Sample("small", np.zeros((300, 400, 3), np.uint8), boxes=[Box(1, 2, 30, 40, 1)])
    same, scale = downscale_sample(small, 640)
    assert same is small and scale == 1.0
    label = np.zeros((427, 640), np.uint8)
    label[:, 320:] = 2
    full = upscale_label(label, (2000, 3000))
    assert full.shape == (2000, 3000) and full[0, 0] == 0 and full[-1, -1] == 2


def test_resized_dataset_loads_samples_at_max_side(sample_root):
    from graphwsss.data import VOCDataset

    dataset = VOCDataset(sample_root)
    resized = ResizedDataset(dataset, 100)
    image_id = dataset.ids[0]
    sample = resized.load(image_id)
    assert max(sample.image.shape[:2]) == 100
    assert sample.original_size == dataset.load(image_id).image.shape[:2]
    assert resized.ids == dataset.ids and len(resized) == len(dataset)
    assert resized.ground_truth(image_id).shape == sample.original_size
