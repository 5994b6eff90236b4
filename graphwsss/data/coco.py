"""Reader for COCO instance annotations (``instances_*.json``).

Categories become class ids 1..K in increasing COCO category id (0 is the background).
Polygon and RLE (compressed or uncompressed) masks are decoded with ``pycocotools`` into a
class map and an instance map; crowd regions are void (255) in the class map and give no box.
Overlapping instances: the smaller instance wins its pixels, as for boxes (DESIGN.md §2).
"""

from __future__ import annotations

import json
import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from graphwsss.data.errors import DataError
from graphwsss.data.ids import check_image_ids
from graphwsss.data.palette import read_image
from graphwsss.data.records import IGNORE_INDEX, Box, Sample, tags_from_boxes
from graphwsss.data.voc import clip_box


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """One COCO ``segmentation`` (polygon list, RLE dict with ``counts`` as a list or a string)
    to a ``[H, W]`` bool mask."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        if isinstance(segmentation["counts"], list):
            rle = coco_mask.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": segmentation["size"],
                   "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"RLE size {rle['size']} differs from the image's {[height, width]}")
    else:
        raise ValueError("segmentation is neither a polygon list nor an RLE dict")
    return coco_mask.decode(rle).astype(bool)


def encode_rle(mask: np.ndarray) -> dict:
    """A ``[H, W]`` bool mask as a COCO compressed RLE dict with a JSON-ready ``counts`` string."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": rle["counts"].decode("ascii")}


class COCODataset:
    """COCO instances JSON plus an image folder; ``dataset[i]`` is a :class:`Sample` whose
    ``label`` (class map) and ``instance`` (instance ids 1..n) come from the masks."""

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        try:
            content = json.loads(self.annotation_file.read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise DataError(self.annotation_file, "annotation file is missing") from error
        except (OSError, json.JSONDecodeError) as error:
            raise DataError(self.annotation_file, f"cannot read COCO JSON ({error})") from error
        for key in ("images", "annotations", "categories"):
            if key not in content:
                raise DataError(self.annotation_file, f"COCO JSON has no {key!r} list")
        categories = sorted(content["categories"], key=lambda category: category["id"])
        self.class_names = ["background"] + [category["name"] for category in categories]
        self.category_to_class = {category["id"]: index + 1
                                  for index, category in enumerate(categories)}
        self.images = {image["id"]: image for image in content["images"]}
        self._check_file_names()
        self.annotations: dict[int, list[dict]] = {image_id: [] for image_id in self.images}
        for annotation in content["annotations"]:
            if annotation["image_id"] not in self.images:
                raise DataError(self.annotation_file, f"annotation {annotation.get('id')} refers "
                                f"to image id {annotation['image_id']}, which is not listed")
            if annotation["category_id"] not in self.category_to_class:
                raise DataError(self.annotation_file, f"annotation {annotation.get('id')} has "
                                f"category id {annotation['category_id']}, not in 'categories'")
            self.annotations[annotation["image_id"]].append(annotation)
        self.image_ids = sorted(self.images)

    def _check_file_names(self) -> None:
        """Each image's ``file_name`` lies under the image folder; its stem (the image id of
        the outputs) is a valid id, unique across the images."""
        named = []
        for index, (image_id, info) in enumerate(self.images.items()):
            where = f"images[{index}] (id {image_id})"
            file_name = info.get("file_name") if isinstance(info, dict) else None
            if not isinstance(file_name, str) or not file_name:
                raise DataError(self.annotation_file, f"{where} has no 'file_name'")
            parts = file_name.replace("\\", "/").split("/")
            if Path(file_name).is_absolute() or file_name.startswith(("/", "\\")) or ".." in parts:
                raise DataError(self.annotation_file, f"{where}: file_name {file_name!r} must be "
                                                      "a path inside the image folder")
            named.append((f"{where} file_name {file_name!r}", Path(file_name).stem))
        check_image_ids(named, self.annotation_file)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @cached_property
    def ids(self) -> list[str]:
        """Image ids as strings (file stems), in the order of ``dataset[i]``."""
        return [Path(self.images[image_id]["file_name"]).stem for image_id in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.image_ids[index])

    def __iter__(self):
        for image_id in self.image_ids:
            yield self.load(image_id)

    def load(self, coco_image_id: int) -> Sample:
        info = self.images[coco_image_id]
        image_path = self.image_dir / info["file_name"]
        image = read_image(image_path)
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise DataError(self.annotation_file, f"image {info['file_name']} is {width}x{height} "
                            f"but the JSON says {info['width']}x{info['height']}")
        label = np.zeros((height, width), dtype=np.uint8)
        instance = np.zeros((height, width), dtype=np.uint8)
        boxes = []
        instances = []
        for annotation in self.annotations[coco_image_id]:
            where = f"annotation {annotation.get('id')} of {info['file_name']}"
            try:
                mask = decode_segmentation(annotation["segmentation"], height, width)
            except (KeyError, ValueError, TypeError) as error:
                raise DataError(self.annotation_file, f"{where}: {error}") from error
            class_id = self.category_to_class[annotation["category_id"]]
            if annotation.get("iscrowd", 0):
                label[mask] = IGNORE_INDEX
                continue
            x, y, box_width, box_height = annotation["bbox"]
            box = Box(math.floor(x), math.floor(y), math.ceil(x + box_width),
                      math.ceil(y + box_height), class_id)
            box = clip_box(box, width, height, f"{self.annotation_file} ({where})")
            instances.append((mask.sum(), mask, box))
        if len(instances) > 254:
            raise DataError(self.annotation_file, f"{info['file_name']} has {len(instances)} "
                            "instances; instance maps hold at most 254")
        # Larger instances first so that smaller ones are painted over them.
        order = sorted(range(len(instances)), key=lambda index: -instances[index][0])
        for index in order:
            _, mask, box = instances[index]
            label[mask] = box.class_id
            instance[mask] = index + 1
        boxes = [box for _, _, box in instances]
        return Sample(image_id=Path(info["file_name"]).stem, image=image, boxes=boxes,
                      label=label, instance=instance, tags=tags_from_boxes(boxes),
                      image_path=image_path)
