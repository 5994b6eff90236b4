"""Reading and writing images and label maps: RGB images, VOC-palette label PNGs.

Label PNGs are palette ('P') images whose indices are the class ids (255 void), as in
Pascal VOC's ``SegmentationClass``. Writes are atomic (temporary name, then rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from graphwsss.data.errors import DataError
from graphwsss.utils.io import atomic_path


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The Pascal VOC colour map: ``[num_entries, 3]`` uint8, entry i is the colour of label i."""
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for label in range(num_entries):
        value, red, green, blue = label, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (red, green, blue)
    return palette


_PALETTE_BYTES = voc_palette().flatten().tolist()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB; a clear :class:`DataError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file is missing")
    try:
        with Image.open(path) as handle:
            handle.load()
            return np.asarray(handle.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(path, f"cannot read the image ({error})") from error


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map PNG as ``[H, W]`` uint8 of class ids.

    Palette images give their indices; greyscale images their values. Colour images are
    rejected, because their class ids cannot be recovered without guessing a palette.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "label file is missing")
    try:
        with Image.open(path) as handle:
            handle.load()
            if handle.mode in ("P", "L"):
                return np.asarray(handle, dtype=np.uint8).copy()
            if handle.mode in ("I", "I;16"):
                values = np.asarray(handle)
                if values.max(initial=0) > 255:
                    raise DataError(path, f"label values up to {values.max()} do not fit 0..255")
                return values.astype(np.uint8)
            raise DataError(path, f"label PNG has mode {handle.mode!r}; expected a palette or "
                                  "greyscale image of class ids")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(path, f"cannot read the label image ({error})") from error


def write_label_png(path: str | os.PathLike, label: np.ndarray) -> Path:
    """Write ``[H, W]`` integer class ids as a VOC-palette PNG, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"a label map must be [H, W]; got shape {label.shape} for {path}")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must lie in 0..255 for {path}")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE_BYTES)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def colorize(label: np.ndarray) -> np.ndarray:
    """``[H, W]`` class ids to ``[H, W, 3]`` uint8 VOC colours (for reports)."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]
