#!/usr/bin/env python
"""Write a Pascal VOC copy of a few images of a data set, upscaled to a camera-sized resolution
(default 3000x2000), to measure the working resolution (``max_side``, issue 14.6). Example::

    python scripts/make_upscaled_set.py --data ../shared/data/grabcut --out /tmp/grabcut_3000 \\
        --count 3 --size 3000 2000

Images are resized bicubically, ground truth (SegmentationClass, SegmentationObject,
SegmentationScribble) by nearest neighbour, boxes in ``Annotations/*.xml`` scaled; the split
``ImageSets/Segmentation/train.txt`` lists the first ``--count`` images of ``--split``.
"""

from __future__ import annotations

import argparse
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image


def _scale_xml(source: Path, target: Path, sx: float, sy: float, size: tuple[int, int]) -> None:
    tree = ET.parse(source)
    root = tree.getroot()
    for node in root.iter("size"):
        node.find("width").text, node.find("height").text = str(size[0]), str(size[1])
    for box in root.iter("bndbox"):
        for key, scale, limit in (("xmin", sx, size[0]), ("xmax", sx, size[0]),
                                  ("ymin", sy, size[1]), ("ymax", sy, size[1])):
            node = box.find(key)
            # VOC boxes are 1-based inclusive: pixel columns xmin-1 .. xmax-1.
            if key.endswith("min"):
                node.text = str(max(1, int((int(node.text) - 1) * scale) + 1))
            else:
                node.text = str(min(limit, round(int(node.text) * scale)))
    tree.write(target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--out", required=True, help="folder of the upscaled copy")
    parser.add_argument("--split", default="train")
    parser.add_argument("--count", type=int, default=3, help="first N images of the split")
    parser.add_argument("--size", type=int, nargs=2, default=(3000, 2000), metavar=("W", "H"),
                        help="size of a landscape image; portrait images get H x W")
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    ids = (data / "ImageSets" / "Segmentation" / f"{args.split}.txt").read_text().split()
    ids = ids[:args.count]
    (out / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    for name in ("labels.txt",):
        if (data / name).is_file():
            shutil.copy(data / name, out / name)
    for image_id in ids:
        source = next((data / "JPEGImages").glob(f"{image_id}.*"))
        image = Image.open(source).convert("RGB")
        width, height = args.size if image.width >= image.height else args.size[::-1]
        sx, sy = width / image.width, height / image.height
        (out / "JPEGImages").mkdir(exist_ok=True)
        image.resize((width, height), Image.BICUBIC).save(out / "JPEGImages" / f"{image_id}.jpg",
                                                          quality=95)
        for folder in ("SegmentationClass", "SegmentationObject", "SegmentationScribble"):
            path = data / folder / f"{image_id}.png"
            if path.is_file():
                (out / folder).mkdir(exist_ok=True)
                label = Image.open(path)           # palette kept
                label.resize((width, height), Image.NEAREST).save(out / folder / path.name)
        xml = data / "Annotations" / f"{image_id}.xml"
        if xml.is_file():
            (out / "Annotations").mkdir(exist_ok=True)
            _scale_xml(xml, out / "Annotations" / xml.name, sx, sy, (width, height))
        print(f"{image_id}: {image.width}x{image.height} -> {width}x{height}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
