"""Reader for COCO instance annotations (``instances_*.json``).

Categories become class ids 1..K in increasing COCO category id (0 is the background).
Polygon and RLE (compressed or uncompressed) masks are decoded with ``pycocotools`` into a
class map and an instance map; crowd regions are void (255) in the class map and give no box.
Overlapping instances: the smaller instance wins its pixels, as for boxes (docs/method.md §2).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from graphwsss.data.errors import DataError
from graphwsss.data.ids import check_image_ids
from graphwsss.data.palette import read_image
from graphwsss.data.records import IGNORE_INDEX, Box, Point, Sample, tags_from_boxes
from graphwsss.data.voc import clip_box, parse_points


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


def read_coco_json(path: str | os.PathLike) -> dict:
    """Parse a COCO instances file; :class:`DataError` naming it when it is missing, unreadable,
    not JSON, or has no ``images``, ``annotations`` and ``categories`` lists."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise DataError(path, "annotation file is missing") from error
    except json.JSONDecodeError as error:
        raise DataError(path, f"cannot read COCO JSON: invalid JSON ({error})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read COCO JSON ({error})") from error
    if not isinstance(content, dict):
        raise DataError(path, f"COCO JSON must be an object, not {type(content).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in content:
            raise DataError(path, f"COCO JSON has no {key!r} list")
        if not isinstance(content[key], list):
            raise DataError(path, f"COCO JSON: {key!r} must be a list, "
                                  f"not {type(content[key]).__name__}")
    return content


def _split_of(annotation_file: Path) -> str:
    """``train2017`` of ``instances_train2017.json``; the file's stem otherwise."""
    stem = annotation_file.stem
    return stem[len("instances_"):] if stem.startswith("instances_") else stem


def find_coco_files(data: str | os.PathLike, images: str | os.PathLike | None = None,
                    split: str = "train") -> tuple[Path, Path, Path]:
    """``(annotation file, image folder, data root)`` of a COCO input.

    ``data`` is an instances JSON file or a folder holding ``annotations/instances_<split>.json``
    (else its only ``annotations/instances_*.json``). The data root is the folder above
    ``annotations/`` (else the JSON's folder). The image folder is ``images`` when given, else
    the first folder that exists of ``<root>/images/<name>``, ``<root>/<name>`` and
    ``<root>/images`` (``<name>``: ``train2017`` of ``instances_train2017.json``), else, for a
    JSON file given directly, the folder it lies in.
    """
    data = Path(data)
    if data.is_dir():
        folder = data / "annotations"
        annotation_file = folder / f"instances_{split}.json"
        if not annotation_file.is_file():
            found = sorted(folder.glob("instances_*.json")) if folder.is_dir() else []
            if len(found) != 1:
                listed = ", ".join(path.name for path in found) or "none"
                raise DataError(annotation_file, "COCO annotation file is missing (found "
                                f"{listed} in {folder}; set split=NAME for instances_NAME.json)")
            annotation_file = found[0]
        root = data
    elif data.is_file():
        annotation_file = data
        root = data.parent.parent if data.parent.name == "annotations" else data.parent
    else:
        raise DataError(data, "--data does not exist")
    if images is not None:
        image_dir = Path(images)
        if not image_dir.is_dir():
            raise DataError(image_dir, "--images folder does not exist")
        return annotation_file, image_dir, root
    name = _split_of(annotation_file)
    candidates = [root / "images" / name, root / name, root / "images"]
    if data.is_file():
        candidates.append(data.parent)
    for candidate in candidates:
        if candidate.is_dir():
            return annotation_file, candidate, root
    raise DataError(annotation_file, "no image folder found (tried "
                    f"{', '.join(str(path) for path in candidates)}); give --images DIR")


def is_coco_input(data: str | os.PathLike) -> bool:
    """Whether ``data`` is a COCO input: a ``.json`` file, or a folder with ``annotations/``
    holding ``instances_*.json`` and no VOC ``labels.txt``."""
    data = Path(data)
    if data.is_file():
        return data.suffix.lower() == ".json"
    return (data.is_dir() and not (data / "labels.txt").is_file()
            and any((data / "annotations").glob("instances_*.json")))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _has_mask(annotation: dict) -> bool:
    segmentation = annotation.get("segmentation")
    return isinstance(segmentation, dict) or (isinstance(segmentation, list) and bool(segmentation))


class COCODataset:
    """COCO instances JSON plus an image folder, with the interface of
    :class:`~graphwsss.data.voc.VOCDataset`: ``ids`` (file stems), ``load(id)``,
    ``ground_truth(id)``, ``class_names``, ``num_classes``, ``has_ground_truth``, ``root``.

    ``dataset[i]`` is a :class:`Sample`: boxes from the non-crowd annotations' ``bbox`` (in file
    order), tags their classes; when every annotation has a mask, ``label`` (class map, crowd
    regions void) and ``instance`` (ids 1..n) come from the masks, else they are ``None``.
    COCO category ids are class ids 1..K internally (``category_to_class``,
    ``class_to_category``). Every problem is a :class:`DataError` naming the file and the entry,
    raised on construction where the JSON alone shows it (images listed but missing too).
    """

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike,
                 supervision: str | None = None, root: str | os.PathLike | None = None) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.root = Path(root) if root is not None else self.annotation_file.parent
        self.supervision = supervision
        self.content = read_coco_json(self.annotation_file)
        self._read_categories(self.content["categories"])
        self._read_images(self.content["images"])
        self.annotations: dict[int, list[dict]] = {image_id: [] for image_id in self.images}
        self.box_annotations: dict[int, list[int]] = {image_id: [] for image_id in self.images}
        for index, annotation in enumerate(self.content["annotations"]):
            self._check_annotation(index, annotation)
            self.annotations[annotation["image_id"]].append(annotation)
            if not annotation.get("iscrowd", 0):
                self.box_annotations[annotation["image_id"]].append(index)
        self.image_ids = sorted(self.images)
        self._stems = {Path(self.images[image_id]["file_name"]).stem: image_id
                       for image_id in self.image_ids}
        if not self.image_ids:
            raise DataError(self.annotation_file, "COCO JSON lists no images")

    def _read_categories(self, categories: list) -> None:
        seen = set()
        for index, category in enumerate(categories):
            where = f"categories[{index}]"
            if not isinstance(category, dict) or not _is_int(category.get("id")) \
                    or not isinstance(category.get("name"), str):
                raise DataError(self.annotation_file, f"{where} needs an integer 'id' and a "
                                                      "'name'")
            if category["id"] in seen:
                raise DataError(self.annotation_file, f"{where}: category id {category['id']} "
                                                      "repeats an earlier one")
            seen.add(category["id"])
        if not categories:
            raise DataError(self.annotation_file, "COCO JSON lists no categories")
        if len(categories) > 254:
            raise DataError(self.annotation_file, f"{len(categories)} categories do not fit "
                                                  "class ids 1..254")
        ordered = sorted(categories, key=lambda category: category["id"])
        self.class_names = ["background"] + [category["name"] for category in ordered]
        self.category_to_class = {category["id"]: index + 1
                                  for index, category in enumerate(ordered)}
        self.class_to_category = {index: category
                                  for category, index in self.category_to_class.items()}
        self.class_ids = {name: index for index, name in enumerate(self.class_names)}

    def _read_images(self, images: list) -> None:
        self.images: dict[int, dict] = {}
        for index, info in enumerate(images):
            if not isinstance(info, dict) or not _is_int(info.get("id")):
                raise DataError(self.annotation_file, f"images[{index}] needs an integer 'id'")
            if info["id"] in self.images:
                raise DataError(self.annotation_file, f"images[{index}]: image id {info['id']} "
                                                      "repeats an earlier one")
            self.images[info["id"]] = info
        self._check_file_names()
        for index, info in enumerate(images):
            path = self.image_dir / info["file_name"]
            if not path.is_file():
                raise DataError(path, f"image file is missing (images[{index}], id {info['id']}, "
                                      f"of {self.annotation_file})")

    def _check_annotation(self, index: int, annotation) -> None:
        if not isinstance(annotation, dict):
            raise DataError(self.annotation_file, f"annotations[{index}] must be an object")
        where = f"annotations[{index}] (id {annotation.get('id')})"
        if annotation.get("image_id") not in self.images:
            raise DataError(self.annotation_file, f"{where} refers to image id "
                                                  f"{annotation.get('image_id')!r}, which is not "
                                                  "in 'images'")
        if annotation.get("category_id") not in self.category_to_class:
            raise DataError(self.annotation_file, f"{where} has category id "
                                                  f"{annotation.get('category_id')!r}, not in "
                                                  "'categories'")
        if annotation.get("iscrowd", 0):
            return                                    # no weak label: its box is not used
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4
                and all(isinstance(value, (int, float)) and not isinstance(value, bool)
                        and math.isfinite(value) for value in bbox)):
            raise DataError(self.annotation_file, f"{where}: 'bbox' must be [x, y, width, "
                                                  f"height], got {bbox!r}")
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise DataError(self.annotation_file, f"{where}: empty box: bbox {bbox} has zero or "
                                                  "negative width or height")

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
    def has_ground_truth(self) -> bool:
        """Whether every annotation has a mask (polygon or RLE): the masks are then the ground
        truth of the evaluation. A file where only some have one has none (warned)."""
        annotations = self.content["annotations"]
        masked = sum(_has_mask(annotation) for annotation in annotations)
        if 0 < masked < len(annotations):
            warnings.warn(f"{self.annotation_file}: only {masked} of {len(annotations)} "
                          "annotations have a segmentation; no evaluation", stacklevel=2)
        return bool(annotations) and masked == len(annotations)

    @cached_property
    def ids(self) -> list[str]:
        """Image ids as strings (file stems), in the order of ``dataset[i]``."""
        return [Path(self.images[image_id]["file_name"]).stem for image_id in self.image_ids]

    def coco_id(self, image_id: str | int) -> int:
        """The COCO image id of an image id (file stem); a COCO image id stays as it is."""
        if isinstance(image_id, str):
            if image_id not in self._stems:
                raise DataError(self.annotation_file, f"no image {image_id!r} in 'images'")
            return self._stems[image_id]
        return image_id

    def box_count(self, image_id: str | int) -> int:
        return len(self.box_annotations[self.coco_id(image_id)])

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.image_ids[index])

    def __iter__(self):
        for image_id in self.image_ids:
            yield self.load(image_id)

    def image_path(self, image_id: str | int) -> Path:
        return self.image_dir / self.images[self.coco_id(image_id)]["file_name"]

    @cached_property
    def _points(self) -> dict[str, list[Point]] | None:
        path = self.root / "points.json"
        return parse_points(path, self.class_ids) if path.is_file() else None

    def _maps(self, coco_image_id: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Class map (crowd void) and instance map (ids 1..n in box order) from the masks."""
        info = self.images[coco_image_id]
        label = np.zeros((height, width), dtype=np.uint8)
        instance = np.zeros((height, width), dtype=np.uint8)
        instances = []
        for annotation in self.annotations[coco_image_id]:
            where = f"annotation {annotation.get('id')} of {info['file_name']}"
            try:
                mask = decode_segmentation(annotation["segmentation"], height, width)
            except (KeyError, ValueError, TypeError) as error:
                raise DataError(self.annotation_file, f"{where}: {error}") from error
            if annotation.get("iscrowd", 0):
                label[mask] = IGNORE_INDEX
                continue
            instances.append((mask.sum(), mask, self.category_to_class[annotation["category_id"]]))
        if len(instances) > 254:
            raise DataError(self.annotation_file, f"{info['file_name']} has {len(instances)} "
                            "instances; instance maps hold at most 254")
        # Larger instances first so that smaller ones are painted over them.
        for index in sorted(range(len(instances)), key=lambda index: -instances[index][0]):
            _, mask, class_id = instances[index]
            label[mask] = class_id
            instance[mask] = index + 1
        return label, instance

    def _size(self, coco_image_id: int) -> tuple[int, int]:
        info = self.images[coco_image_id]
        if _is_int(info.get("height")) and _is_int(info.get("width")):
            return info["height"], info["width"]
        with Image.open(self.image_path(coco_image_id)) as handle:
            return handle.height, handle.width

    def ground_truth(self, image_id: str | int) -> np.ndarray:
        """The ``[H, W]`` class map of one image from its masks, crowd regions 255."""
        coco_image_id = self.coco_id(image_id)
        if not self.has_ground_truth:
            raise DataError(self.annotation_file, "annotations have no masks: no ground truth")
        return self._maps(coco_image_id, *self._size(coco_image_id))[0]

    def load(self, image_id: str | int) -> Sample:
        """One image (by file stem or COCO image id) with its boxes, tags and, when the file
        has masks, class and instance maps."""
        coco_image_id = self.coco_id(image_id)
        info = self.images[coco_image_id]
        image_path = self.image_path(coco_image_id)
        image = read_image(image_path)
        height, width = image.shape[:2]
        if (info.get("height", height), info.get("width", width)) != (height, width):
            raise DataError(self.annotation_file, f"image {info['file_name']} is {width}x{height} "
                            f"but the JSON says {info['width']}x{info['height']}")
        boxes = []
        for index in self.box_annotations[coco_image_id]:
            annotation = self.content["annotations"][index]
            x, y, box_width, box_height = annotation["bbox"]
            box = Box(math.floor(x), math.floor(y), math.ceil(x + box_width),
                      math.ceil(y + box_height), self.category_to_class[annotation["category_id"]])
            where = f"annotations[{index}] (id {annotation.get('id')})"
            boxes.append(clip_box(box, width, height, f"{self.annotation_file} ({where})"))
        label = instance = None
        if self.has_ground_truth:
            label, instance = self._maps(coco_image_id, height, width)
        stem = Path(info["file_name"]).stem
        points = None
        if self.supervision in (None, "point"):
            points = (self._points or {}).get(stem)
            for point in points or []:
                if not (0 <= point.x < width and 0 <= point.y < height):
                    raise DataError(self.root / "points.json",
                                    f"point ({point.x}, {point.y}) of image {stem!r} lies outside "
                                    f"the {width}x{height} image")
        return Sample(image_id=stem, image=image, boxes=boxes, label=label, instance=instance,
                      points=points, tags=tags_from_boxes(boxes), image_path=image_path)

    def to_result(self, result: dict) -> dict:
        """A run's result dict (string image id, class id) with COCO's image and category ids."""
        return {**result, "image_id": self.coco_id(result["image_id"]),
                "category_id": self.class_to_category[result["category_id"]]}

    def with_masks(self, image_ids: list[str],
                   results: Callable[[str], list[dict] | None]) -> dict:
        """The input COCO content, restricted to ``image_ids``, whose non-crowd annotations have
        the run's ``segmentation`` (compressed RLE, counts a string) and its ``area``.

        ``results(image_id)`` gives the run's per-box result dicts of one image in box order
        (:func:`~graphwsss.postprocess.instances_to_coco`), ``None`` for an image without boxes.
        Every other field of the file, of its images and annotations is kept as it was.
        """
        coco_ids = {self.coco_id(image_id) for image_id in image_ids}
        filled: dict[int, dict] = {}
        for coco_image_id in sorted(coco_ids):
            indices = self.box_annotations[coco_image_id]
            stem = Path(self.images[coco_image_id]["file_name"]).stem
            made = results(stem) if indices else []
            if made is None or len(made) != len(indices):
                raise DataError(self.annotation_file, f"image {stem!r}: the run has "
                                f"{0 if made is None else len(made)} instance masks for its "
                                f"{len(indices)} boxes")
            for index, result in zip(indices, made):
                filled[index] = {"segmentation": result["segmentation"],
                                 "area": float(result["area"])}
        annotations = [{**annotation, **filled.get(index, {})}
                       for index, annotation in enumerate(self.content["annotations"])
                       if annotation["image_id"] in coco_ids]
        return {**self.content,
                "images": [info for info in self.content["images"] if info["id"] in coco_ids],
                "annotations": annotations}
