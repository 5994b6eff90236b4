"""Seeds made by another tool (issue 15.2): ``seeds.source=files`` reads ``<seeds.dir>/<id>.png``
for every image instead of making seeds from the weak labels; graph, propagation and CRF then
refine them as any other seeds.

Two kinds of file (``seeds.file_kind``):

* ``labels``: a label PNG of class ids, as the run writes to ``seeds/``: 0 background,
  1..K the data set's classes (``labels.txt`` order), 255 unknown (no seed). Any other value is
  an error.
* ``mask``: a mask from a segmenter, without classes: 0 is background, every other value is
  foreground. A mask whose foreground values are a single value (``{0, 1}`` or ``{0, 255}``:
  binary) gives each foreground pixel the class of the smallest of the image's boxes that
  contains it; any other mask is an instance mask, and each instance id (every nonzero value)
  takes the class of the box it overlaps most (highest IoU of the instance's pixels and the
  box). Foreground no box covers, and an instance that overlaps no box, become unknown (255):
  nothing says their class.

Palette, greyscale (8 or 16 bit) and 1-bit PNGs are read; colour PNGs are refused, since class
or instance ids cannot be recovered from colours without guessing a palette. Files must have the
image's size (its full size, before ``max_side``). Every problem is a :class:`DataError` naming
the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from graphwsss.data.errors import DataError
from graphwsss.data.records import BACKGROUND, IGNORE_INDEX, Box
from graphwsss.seeds.box import paint_order

FILE_KINDS = ("labels", "mask")


def seed_file(directory: str | os.PathLike, image_id: str) -> Path:
    """``<directory>/<image_id>.png``, a :class:`DataError` naming it when it is missing."""
    path = Path(directory) / f"{image_id}.png"
    if not path.is_file():
        raise DataError(path, f"seed file is missing (seeds.source=files reads "
                              f"{Path(directory)}/<id>.png for every image; none for {image_id})")
    return path


def read_png_values(path: str | os.PathLike) -> np.ndarray:
    """``[H, W]`` integer values of a palette, greyscale or 1-bit PNG (1-bit: 0 and 255)."""
    path = Path(path)
    try:
        with Image.open(path) as handle:
            handle.load()
            if handle.mode == "1":
                return np.asarray(handle.convert("L"), dtype=np.uint8).copy()
            if handle.mode in ("P", "L"):
                return np.asarray(handle, dtype=np.uint8).copy()
            if handle.mode.startswith("I"):
                return np.asarray(handle).astype(np.int64)
            raise DataError(path, f"seed PNG has mode {handle.mode!r}; expected a palette, "
                                  "greyscale or 1-bit image of ids (colours cannot be mapped "
                                  "to classes)")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"cannot read the seed PNG ({error})") from error


def label_seeds(values: np.ndarray, num_classes: int, path: str | os.PathLike) -> np.ndarray:
    """A label PNG's values as seeds, checked: each ``0..num_classes-1`` or 255."""
    bad = np.setdiff1d(np.unique(values), [*range(num_classes), IGNORE_INDEX])
    if bad.size:
        shown = ", ".join(str(int(value)) for value in bad[:8]) + (" ..." if bad.size > 8 else "")
        raise DataError(path, f"seed labels hold class id(s) {shown} that the data set lacks "
                              f"(allowed: 0 background, 1..{num_classes - 1}, 255 unknown); "
                              "for a mask of objects without classes use seeds.file_kind=mask")
    return values.astype(np.uint8)


def mask_seeds(values: np.ndarray, boxes: list[Box], path: str | os.PathLike) -> np.ndarray:
    """A binary or instance mask (see the module docstring) as seeds, classes from ``boxes``."""
    seeds = np.full(values.shape, BACKGROUND, dtype=np.uint8)
    foreground = values != 0
    if not foreground.any():
        return seeds
    if not boxes:
        raise DataError(path, "mask seeds need the image's boxes (Annotations/<id>.xml) to give "
                              "their foreground a class, and the image has none")
    seeds[foreground] = IGNORE_INDEX
    ids = np.unique(values[foreground])
    if ids.size == 1:                     # binary: the smallest containing box wins
        classes = np.full(values.shape, IGNORE_INDEX, dtype=np.uint8)
        for index in paint_order(boxes):
            classes[boxes[index].slices()] = boxes[index].class_id
        seeds[foreground] = classes[foreground]
        return seeds
    for instance in ids:
        where = values == instance
        area = int(where.sum())
        overlaps = [int(where[box.slices()].sum()) for box in boxes]
        ious = [overlap / (area + box.area - overlap) for overlap, box in zip(overlaps, boxes)]
        best = int(np.argmax(ious))
        if overlaps[best] > 0:
            seeds[where] = boxes[best].class_id
    return seeds


def read_seed_file(directory: str | os.PathLike, image_id: str, kind: str, num_classes: int,
                   boxes: list[Box], size: tuple[int, int]) -> np.ndarray:
    """The ``[H, W]`` uint8 seeds (0 background, 1..K, 255 unknown) of ``image_id`` from
    ``<directory>/<image_id>.png``, a file of ``kind`` (``labels`` or ``mask``) that must have
    the image's ``size`` ``(H, W)``; ``boxes`` (at that size) give masks their classes."""
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown seed file kind {kind!r}; known: {', '.join(FILE_KINDS)}")
    path = seed_file(directory, image_id)
    values = read_png_values(path)
    if values.shape != tuple(size):
        raise DataError(path, f"seed file size {values.shape[1]}x{values.shape[0]} differs from "
                              f"the image's {size[1]}x{size[0]}")
    if kind == "labels":
        return label_seeds(values, num_classes, path)
    return mask_seeds(values, boxes, path)
