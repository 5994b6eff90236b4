"""A working resolution: images larger than ``max_side`` are processed at that size (issue 14.6).

:func:`downscale_sample` shrinks one sample (image by area interpolation; boxes, points and
scribbles scaled so that none is lost; label maps nearest); :class:`ResizedDataset` applies it
wherever a run loads a sample, and :func:`upscale_label` brings a label map back to the image's
original size at the end. Ground truth (:meth:`ResizedDataset.ground_truth`) stays full size.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from graphwsss.data.records import IGNORE_INDEX, Box, Point, Sample


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """``(h, w)`` with the long side at most ``max_side`` (0: no limit), aspect kept, >= 1."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _scale_box(box: Box, sy: float, sx: float, height: int, width: int) -> Box:
    x0 = min(max(math.floor(box.x0 * sx), 0), width - 1)
    y0 = min(max(math.floor(box.y0 * sy), 0), height - 1)
    x1 = min(max(math.ceil(box.x1 * sx), x0 + 1), width)       # kept >= 1 px, inside the image
    y1 = min(max(math.ceil(box.y1 * sy), y0 + 1), height)
    return Box(x0, y0, x1, y1, box.class_id)


def _scale_point(point: Point, sy: float, sx: float, height: int, width: int) -> Point:
    return Point(min(max(int((point.x + 0.5) * sx), 0), width - 1),
                 min(max(int((point.y + 0.5) * sy), 0), height - 1), point.class_id)


def _nearest(label: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    if label is None or label.shape[:2] == size:
        return label
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def _scatter(scribble: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    """Every labelled pixel moved to its cell of the smaller grid, so thin scribbles survive
    (nearest sampling would drop a 1-px line between samples)."""
    if scribble is None or scribble.shape[:2] == size:
        return scribble
    out = np.full(size, IGNORE_INDEX, dtype=scribble.dtype)
    rows, cols = np.nonzero(scribble != IGNORE_INDEX)
    out[np.minimum(rows * size[0] // scribble.shape[0], size[0] - 1),
        np.minimum(cols * size[1] // scribble.shape[1], size[1] - 1)] = scribble[rows, cols]
    return out


def downscale_sample(sample: Sample, max_side: int) -> tuple[Sample, float]:
    """``(sample at its working size, scale)``; the sample itself and 1.0 when it is no larger
    than ``max_side`` (0: off). The result remembers the original size and boxes."""
    height, width = sample.height, sample.width
    size = working_size(height, width, max_side)
    if size == (height, width):
        return sample, 1.0
    sy, sx = size[0] / height, size[1] / width
    image = cv2.resize(sample.image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return dataclasses.replace(
        sample, image=image,
        boxes=[_scale_box(box, sy, sx, *size) for box in sample.boxes],
        points=(None if sample.points is None else
                [_scale_point(point, sy, sx, *size) for point in sample.points]),
        label=_nearest(sample.label, size), instance=_nearest(sample.instance, size),
        scribble=_scatter(sample.scribble, size),
        original_size=(height, width), original_boxes=list(sample.boxes)), size[0] / height


def upscale_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``[h, w]`` label (or instance) map at ``size`` ``(H, W)``, nearest neighbour."""
    return _nearest(label, tuple(size))


class ResizedDataset:
    """A data set whose :meth:`load` gives samples at their working size (``max_side``); every
    other attribute, ground truth included, is the wrapped data set's."""

    def __init__(self, dataset, max_side: int) -> None:
        self.dataset = dataset
        self.max_side = max_side

    def load(self, image_id: str) -> Sample:
        return downscale_sample(self.dataset.load(image_id), self.max_side)[0]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.dataset.ids[index])

    def __iter__(self):
        return (self.load(image_id) for image_id in self.dataset.ids)

    def __getattr__(self, name: str):
        return getattr(self.dataset, name)
