"""Typed records for one annotated image.

Label values everywhere (docs/method.md §2): 0 background, 1..K classes, 255 unknown / ignored.
Boxes use 0-based pixel coordinates, half-open: a box covers columns ``x0 <= x < x1`` and rows
``y0 <= y < y1`` (Pascal VOC's 1-based inclusive ``xmin..xmax`` becomes ``xmin-1 .. xmax``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE_INDEX = 255
BACKGROUND = 0


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of one object instance: ``[x0, x1) x [y0, y1)`` in pixels."""

    x0: int
    y0: int
    x1: int
    y1: int
    class_id: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def slices(self) -> tuple[slice, slice]:
        """``(rows, cols)`` slices for indexing an ``[H, W]`` array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Point:
    """One clicked pixel of an object: ``x`` column, ``y`` row (0-based)."""

    x: int
    y: int
    class_id: int


@dataclass
class Sample:
    """One image with every annotation a data set provides for it.

    Shapes: ``image`` ``[H, W, 3]`` uint8 RGB; ``label``, ``instance`` and ``scribble``
    ``[H, W]`` uint8 (255 void / unlabeled) or None when the set has none.
    ``tags`` are the sorted foreground class ids present (derived from the boxes).
    ``points`` is None when ``points.json`` has no entry for the image (or is absent), and an
    empty list when its entry lists no point (an image without objects).
    """

    image_id: str
    image: np.ndarray
    boxes: list[Box] = field(default_factory=list)
    label: np.ndarray | None = None
    instance: np.ndarray | None = None
    scribble: np.ndarray | None = None
    points: list[Point] | None = None
    tags: tuple[int, ...] = ()
    image_path: Path | None = None
    # Set when the sample was shrunk to its working size (graphwsss.data.resize): the image's
    # ``(H, W)`` and boxes before that, at which pseudo labels and instances are written.
    original_size: tuple[int, int] | None = None
    original_boxes: list[Box] | None = None
    # The weak labels say the image holds no background: its scribbles mark none, in a data set
    # whose scribbles mark background wherever there is some (VOCDataset's scribble_background).
    no_background: bool = False

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


def tags_from_boxes(boxes: list[Box]) -> tuple[int, ...]:
    """Image-level tags: the sorted distinct class ids of the boxes."""
    return tuple(sorted({box.class_id for box in boxes}))
