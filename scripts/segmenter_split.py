"""Write a train/val split of a VOC-layout data set into a linked copy (never into the set).

    python scripts/segmenter_split.py ../shared/data/msrc-objects /tmp/msrc-split --train 280

The copy links every folder of the set except ImageSets/, and its
ImageSets/Segmentation/{train,val,all}.txt hold the first ``--train`` ids of the set's
train.txt list and the rest (the split of docs/results.md's segmenter table).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="VOC-layout data set")
    parser.add_argument("out", type=Path, help="new folder for the linked copy (e.g. under /tmp)")
    parser.add_argument("--train", type=int, default=280, help="first N ids of train.txt")
    parser.add_argument("--list", default="train", help="the set's ImageSets/Segmentation list")
    args = parser.parse_args(argv)
    source = args.data.resolve()
    ids = [line.split()[0] for line in
           (source / "ImageSets" / "Segmentation" / f"{args.list}.txt").read_text().splitlines()
           if line.strip()]
    lists = args.out / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        target = args.out / entry.name
        if entry.name != "ImageSets" and not target.exists():
            target.symlink_to(entry)
    for name, chosen in (("train", ids[:args.train]), ("val", ids[args.train:]), ("all", ids)):
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in chosen))
    print(f"{args.out}: train {args.train}, val {len(ids) - args.train} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
