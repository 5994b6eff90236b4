"""How two box runs differ box by box, grouped by the boxes' size on the node grid.

    python scripts/box_size_change.py --data DIR --run RUN --against RUN2 [--stride 8]

For every box of every image both runs labelled: the IoU of the box's class against the ground
truth, inside the box, on pixels with ground truth, in ``RUN/pseudo_labels`` and in
``RUN2/pseudo_labels``. Boxes are grouped by their short side in nodes (``stride`` pixels per
node, the backbone's output stride); per group it prints how many boxes, the mean change of
their IoU in points (RUN minus RUN2), and how many gain or lose more than 0.5 points. This is
the table that showed the output walk averaging small objects away (docs/results.md, "A walk as
long as each box allows").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from graphwsss.data.palette import read_label_png
from graphwsss.data.records import IGNORE_INDEX
from graphwsss.data.voc import VOCDataset

EDGES = (0, 4, 6, 8, 10, 12, 16, 24, 32, 48, np.inf)


def box_iou(label: np.ndarray, truth: np.ndarray, box) -> float:
    """IoU (%) of ``box.class_id`` inside the box, on pixels with ground truth."""
    scored = truth[box.slices()] != IGNORE_INDEX
    predicted = (label[box.slices()] == box.class_id) & scored
    actual = (truth[box.slices()] == box.class_id) & scored
    union = (predicted | actual).sum()
    return 100.0 * (predicted & actual).sum() / union if union else 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="VOC-layout data set with ground truth")
    parser.add_argument("--run", required=True, type=Path, help="a finished box run")
    parser.add_argument("--against", required=True, type=Path, help="the box run to compare with")
    parser.add_argument("--stride", type=int, default=8, help="pixels per node (default 8)")
    args = parser.parse_args(argv)
    dataset = VOCDataset(args.data)
    sides, changes = [], []
    for image_id in dataset.ids:
        files = [run / "pseudo_labels" / f"{image_id}.png" for run in (args.run, args.against)]
        if not all(file.is_file() for file in files):
            continue
        truth = dataset.ground_truth(image_id)
        labels = [read_label_png(file) for file in files]
        if any(label.shape != truth.shape for label in labels):
            parser.error(f"{files[0]}: pseudo label and ground truth of {image_id!r} differ in size")
        for box in dataset.load(image_id).boxes:
            rows, columns = truth[box.slices()].shape
            sides.append(min(rows, columns) / args.stride)
            changes.append(box_iou(labels[0], truth, box) - box_iou(labels[1], truth, box))
    if not sides:
        parser.error(f"{args.run} and {args.against}: no image that both runs labelled")
    sides, changes = np.array(sides), np.array(changes)
    print(f"{len(sides)} boxes; IoU change {args.run} - {args.against}: mean {changes.mean():+.2f}")
    print("short side (nodes)  boxes  mean change  gain > 0.5  loss > 0.5")
    for low, high in zip(EDGES, EDGES[1:]):
        group = (sides >= low) & (sides < high)
        if group.any():
            part = changes[group]
            print(f"  {low:>3g} - {high:<5g} {group.sum():8d} {part.mean():+12.2f} "
                  f"{(part > 0.5).sum():11d} {(part < -0.5).sum():11d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
