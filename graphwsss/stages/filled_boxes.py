"""The filled-box baseline stage: every box filled with its class (docs/method.md §8 reference)."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from graphwsss.data.palette import write_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.seeds.box import fill_boxes
from graphwsss.utils.io import inside
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)


def run(data_root: str | os.PathLike, out_dir: str | os.PathLike, split: str = "train",
        limit: int | None = None, show_progress: bool = True) -> Path:
    """Write ``<out_dir>/<id>.png`` filled-box labels for every image; return ``out_dir``."""
    dataset = VOCDataset(data_root, split=split)
    ids = dataset.ids[:limit] if limit else dataset.ids
    out_dir = Path(out_dir)
    log.info("filled boxes: %d images of %s -> %s", len(ids), dataset.root, out_dir)
    for image_id in tqdm(ids, desc="filled boxes", disable=not show_progress):
        sample = dataset.load(image_id)
        write_label_png(inside(out_dir, f"{image_id}.png"),
                        fill_boxes(sample.boxes, sample.height, sample.width))
    return out_dir
