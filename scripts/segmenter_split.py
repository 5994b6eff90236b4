"""Write a train/val split of a VOC-layout data set into a linked copy (never into the set).

    python scripts/segmenter_split.py ../shared/data/msrc-objects /tmp/msrc-split --train 280
    python scripts/segmenter_split.py ../shared/data/msrc-objects /tmp/msrc-split5 --every 5

The copy links every folder of the set except ImageSets/, and its
ImageSets/Segmentation/{train,val,all}.txt hold the first ``--train`` ids of the set's
train.txt list and the rest, or with ``--every K`` every K-th id (the first, the K+1-th, ...) as
val and the others as train: a split whose val images come from every part of a list ordered by
class, as msrc-objects' is. ``train_images/`` and ``val_images/`` link the images of each part
(the folders ``graphwsss predict --images`` reads).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="VOC-layout data set")
    parser.add_argument("out", type=Path, help="new folder for the linked copy (e.g. under /tmp)")
    parser.add_argument("--train", type=int, default=280, help="first N ids of train.txt")
    parser.add_argument("--every", type=int, default=0, metavar="K",
                        help="every K-th id to val instead of a first-N split")
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
    if args.every:
        val = ids[::args.every]
        held = set(val)
        train = [image_id for image_id in ids if image_id not in held]
    else:
        train, val = ids[:args.train], ids[args.train:]
    for name, chosen in (("train", train), ("val", val), ("all", ids)):
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in chosen))
    images = {path.stem: path for path in (source / "JPEGImages").iterdir()}
    for name, chosen in (("train_images", train), ("val_images", val)):
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        for image_id in chosen:
            if image_id in images and not (folder / images[image_id].name).is_symlink():
                (folder / images[image_id].name).symlink_to(images[image_id])
    print(f"{args.out}: train {len(train)}, val {len(val)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
