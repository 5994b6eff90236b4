"""Reader for data sets in the Pascal VOC layout (README, "Data").

::

    JPEGImages/<id>.jpg               images
    SegmentationClass/<id>.png        class ids, 255 void (ground truth; optional)
    SegmentationObject/<id>.png       instance ids (optional)
    Annotations/<id>.xml              VOC XML boxes, 1-based inclusive coordinates
    SegmentationScribble/<id>.png     class id on scribble pixels, 255 unlabeled (optional)
    points.json                       {"<id>": [{"class": name, "class_id": k, "x": col, "y": row}]}
    labels.txt                        class names, line i is class id i (line 0 background)
    ImageSets/Segmentation/<split>.txt

Image-level tags are the classes named in ``Annotations``. Every problem with a file raises
:class:`~graphwsss.data.errors.DataError` naming that file.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ElementTree
from functools import cached_property
from pathlib import Path

import numpy as np

from graphwsss.data.errors import DataError
from graphwsss.data.ids import check_image_ids, read_json_object
from graphwsss.data.palette import read_image, read_label_png
from graphwsss.data.records import Box, Point, Sample, tags_from_boxes
from graphwsss.data.tags import read_tags

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from ``labels.txt``: line i names class id i, line 0 the background."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "labels.txt is missing; it must list one class name per line, "
                              "background first")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    if len(names) < 2:
        raise DataError(path, "needs at least two class names (background and one object class)")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise DataError(path, f"class names appear twice: {duplicates}")
    if len(names) > 255:
        raise DataError(path, f"{len(names)} classes do not fit label ids 0..254")
    return names


def clip_box(box: Box, width: int, height: int, source: str | os.PathLike) -> Box:
    """Check a box against the image; clip it (with a warning) when it is partly outside.

    Raises :class:`DataError` for an empty box or one entirely outside the image.
    """
    if box.width <= 0 or box.height <= 0:
        raise DataError(source, f"empty box (x {box.x0}..{box.x1}, y {box.y0}..{box.y1}, "
                                f"0-based half-open) for class id {box.class_id}")
    clipped = Box(max(box.x0, 0), max(box.y0, 0), min(box.x1, width), min(box.y1, height),
                  box.class_id)
    if clipped.width <= 0 or clipped.height <= 0:
        raise DataError(source, f"box (x {box.x0}..{box.x1}, y {box.y0}..{box.y1}) lies outside "
                                f"the {width}x{height} image")
    if clipped != box:
        warnings.warn(f"{source}: box (x {box.x0}..{box.x1}, y {box.y0}..{box.y1}) is partly "
                      f"outside the {width}x{height} image; clipped", stacklevel=2)
    return clipped


def parse_voc_xml(path: str | os.PathLike, class_ids: dict[str, int]) -> tuple[list[Box], tuple[int, int] | None]:
    """Boxes of a Pascal VOC annotation file and its declared ``(width, height)`` if any.

    VOC coordinates are 1-based and inclusive; they become 0-based half-open boxes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file is missing")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(path, f"not valid XML ({error})") from error
    size = None
    size_node = root.find("size")
    if size_node is not None and size_node.findtext("width") and size_node.findtext("height"):
        size = (int(float(size_node.findtext("width"))), int(float(size_node.findtext("height"))))
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in class_ids or class_ids[name] == 0:
            raise DataError(path, f"object {index} has class {name!r}, which is not a foreground "
                                  f"class of labels.txt ({', '.join(list(class_ids)[1:])})")
        bndbox = obj.find("bndbox")
        try:
            xmin, ymin, xmax, ymax = (float(bndbox.findtext(tag)) for tag in
                                      ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError) as error:
            raise DataError(path, f"object {index} ({name}) has no readable bndbox") from error
        boxes.append(Box(int(round(xmin)) - 1, int(round(ymin)) - 1, int(round(xmax)),
                         int(round(ymax)), class_ids[name]))
    return boxes, size


def parse_points(path: str | os.PathLike, class_ids: dict[str, int]) -> dict[str, list[Point]]:
    """``points.json``: per image id, the clicked points with their class ids.

    Each entry needs ``x``, ``y`` and a class given as ``class`` (a name) or ``class_id``;
    when both are given they must agree.
    """
    path = Path(path)
    raw = read_json_object(path, "points JSON")
    if not isinstance(raw, dict):
        raise DataError(path, "points JSON must map image ids to lists of points")
    check_image_ids(((f"entry {index}", image_id) for index, image_id in enumerate(raw)), path)
    points: dict[str, list[Point]] = {}
    for image_id, entries in raw.items():
        if not isinstance(entries, list):
            raise DataError(path, f"image {image_id!r}: points must be a list, "
                                  f"not {type(entries).__name__}")
        parsed = []
        for index, entry in enumerate(entries):
            where = f"point {index} of image {image_id!r}"
            if not isinstance(entry, dict):
                raise DataError(path, f"{where} must be an object with 'x', 'y' and a class")
            try:
                x, y = int(entry["x"]), int(entry["y"])
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                raise DataError(path, f"{where} needs integer 'x' and 'y'") from error
            name = entry.get("class")
            if name is not None and (not isinstance(name, str) or name not in class_ids):
                raise DataError(path, f"{where} has class {name!r}, not in labels.txt")
            class_id = class_ids[name] if name is not None else entry.get("class_id")
            if class_id is None:
                raise DataError(path, f"{where} names no class")
            if "class_id" in entry:
                try:
                    given = int(entry["class_id"])
                except (TypeError, ValueError, OverflowError) as error:
                    raise DataError(path, f"{where} has class_id {entry['class_id']!r}, not an "
                                          f"integer") from error
                if name is not None and given != class_id:
                    raise DataError(path, f"{where}: class {name!r} is id {class_id} in "
                                          f"labels.txt, but class_id says {entry['class_id']}")
            if not 0 < int(class_id) < len(class_ids):
                raise DataError(path, f"{where} has class id {class_id}, not a foreground class")
            parsed.append(Point(x, y, int(class_id)))
        points[str(image_id)] = parsed
    return points


class VOCDataset:
    """A data set in the Pascal VOC layout; ``dataset[i]`` is a :class:`Sample`.

    Args:
        root: the folder holding ``JPEGImages``, ``Annotations``, ``labels.txt``, ...
        split: the ``ImageSets/Segmentation/<split>.txt`` list to read; when that file is
            missing, every image in ``JPEGImages`` (sorted).
        ids: an explicit list of image ids (overrides ``split``).
        tags_file: image-level tags as JSON or CSV (:mod:`graphwsss.data.tags`); default: the
            classes of each image's boxes in ``Annotations/``.
        supervision: the kind of weak label a run uses (``box``, ``scribble``, ``point``,
            ``image``): inputs it does not use are then never read, so a broken one cannot stop
            it (``points.json`` only for ``point``, ``SegmentationScribble/`` only for
            ``scribble``; ``SegmentationObject/`` not at all). ``None``: read everything.
        scribble_background: ``annotated`` when the scribbles mark background wherever an image
            has some (the ScribbleSup protocol): a sample whose scribbles mark none then has
            ``no_background`` set. ``unannotated``: scribbles may leave background unmarked.
            ``auto``: annotated when any scribble of the data set marks background
            (:attr:`background_is_scribbled`).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 ids: list[str] | None = None, tags_file: str | os.PathLike | None = None,
                 supervision: str | None = None, scribble_background: str = "auto") -> None:
        if scribble_background not in ("auto", "annotated", "unannotated"):
            raise ValueError(f"scribble_background must be auto, annotated or unannotated, got "
                             f"{scribble_background!r}")
        self.root = Path(root)
        self.tags_file = Path(tags_file) if tags_file else None
        self.supervision = supervision
        self.scribble_background = scribble_background
        if not self.root.is_dir():
            raise DataError(self.root, "data folder does not exist")
        self.class_names = read_class_names(self.root / "labels.txt")
        self.class_ids = {name: index for index, name in enumerate(self.class_names)}
        self.ids = (check_image_ids(((f"item {index} of the given image ids", image_id)
                                     for index, image_id in enumerate(ids)), self.root)
                    if ids is not None else self._list_ids(split))
        if not self.ids:
            raise DataError(self.root, f"no images found (split {split!r})")

    def _list_ids(self, split: str) -> list[str]:
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if split_file.is_file():
            try:
                lines = split_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise DataError(split_file, f"cannot read the image list ({error})") from error
            return check_image_ids(((f"line {number}", line.split()[0])
                                    for number, line in enumerate(lines, start=1)
                                    if line.strip()), split_file)
        image_dir = self.root / "JPEGImages"
        if not image_dir.is_dir():
            raise DataError(image_dir, "JPEGImages folder is missing")
        images = sorted(path for path in image_dir.iterdir()
                        if path.suffix.lower() in IMAGE_SUFFIXES)
        return sorted(check_image_ids(((f"file {path.name}", path.stem) for path in images),
                                      image_dir))

    @property
    def num_classes(self) -> int:
        """Number of classes including the background."""
        return len(self.class_names)

    @property
    def has_ground_truth(self) -> bool:
        return (self.root / "SegmentationClass").is_dir()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return self.load(self.ids[index])

    def __iter__(self):
        for image_id in self.ids:
            yield self.load(image_id)

    @cached_property
    def _tags(self) -> dict[str, tuple[int, ...]] | None:
        return read_tags(self.tags_file, self.class_ids) if self.tags_file else None

    def tags(self, image_id: str, boxes: list[Box]) -> tuple[int, ...]:
        """Image-level tags: from the tags file when one is given, else the boxes' classes."""
        if self._tags is None:
            return tags_from_boxes(boxes)
        if image_id not in self._tags:
            raise DataError(self.tags_file, f"no tags for image {image_id!r}")
        return self._tags[image_id]

    @cached_property
    def background_is_scribbled(self) -> bool:
        """Whether the scribbles mark background wherever an image has some, so that an image
        whose scribbles mark none has no background (``scribble_background``; ``auto``: whether
        any scribble of the data set's images marks class 0)."""
        if self.scribble_background != "auto":
            return self.scribble_background == "annotated"
        folder = self.root / "SegmentationScribble"
        return any((folder / f"{image_id}.png").is_file()
                   and bool((read_label_png(folder / f"{image_id}.png") == 0).any())
                   for image_id in self.ids)

    @cached_property
    def _points(self) -> dict[str, list[Point]] | None:
        path = self.root / "points.json"
        return parse_points(path, self.class_ids) if path.is_file() else None

    def ground_truth_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def ground_truth(self, image_id: str) -> np.ndarray:
        """Only the ``[H, W]`` class map of one image, its class ids checked (for evaluation,
        which needs no image decoding)."""
        path = self.ground_truth_path(image_id)
        if not path.is_file():
            raise DataError(path, "ground-truth file is missing")
        label = read_label_png(path)
        self._check_class_map(label, path)
        return label

    def image_path(self, image_id: str) -> Path:
        for suffix in IMAGE_SUFFIXES:
            path = self.root / "JPEGImages" / f"{image_id}{suffix}"
            if path.is_file():
                return path
        raise DataError(self.root / "JPEGImages" / f"{image_id}.jpg", "image file is missing")

    def _optional_map(self, folder: str, image_id: str, shape: tuple[int, int]) -> np.ndarray | None:
        path = self.root / folder / f"{image_id}.png"
        if not path.is_file():
            if (self.root / folder).is_dir() and folder == "SegmentationClass":
                raise DataError(path, "ground-truth file is missing")
            return None
        values = read_label_png(path)
        if values.shape != shape:
            raise DataError(path, f"size {values.shape[1]}x{values.shape[0]} differs from the "
                                  f"image's {shape[1]}x{shape[0]}")
        return values

    def _check_class_map(self, values: np.ndarray | None, path: Path) -> None:
        if values is None:
            return
        bad = np.setdiff1d(np.unique(values), [*range(self.num_classes), 255])
        if bad.size:
            raise DataError(path, f"class ids {bad.tolist()} are not in labels.txt "
                                  f"(0..{self.num_classes - 1}, 255 void)")

    def load(self, image_id: str) -> Sample:
        """Read one image and all of its annotations."""
        image_path = self.image_path(image_id)
        image = read_image(image_path)
        height, width = image.shape[:2]
        xml_path = self.root / "Annotations" / f"{image_id}.xml"
        boxes: list[Box] = []
        if xml_path.is_file() or (self.root / "Annotations").is_dir():
            raw_boxes, declared = parse_voc_xml(xml_path, self.class_ids)
            if declared is not None and declared != (width, height):
                raise DataError(xml_path, f"declares size {declared[0]}x{declared[1]} but "
                                          f"{image_path.name} is {width}x{height}")
            boxes = [clip_box(box, width, height, xml_path) for box in raw_boxes]
        label = self._optional_map("SegmentationClass", image_id, (height, width))
        self._check_class_map(label, self.ground_truth_path(image_id))
        everything = self.supervision is None
        instance = (self._optional_map("SegmentationObject", image_id, (height, width))
                    if everything else None)
        scribble = None
        if everything or self.supervision == "scribble":
            scribble = self._optional_map("SegmentationScribble", image_id, (height, width))
            self._check_class_map(scribble, self.root / "SegmentationScribble" / f"{image_id}.png")
        points = ((self._points or {}).get(image_id)
                  if everything or self.supervision == "point" else None)
        for point in points or []:
            if not (0 <= point.x < width and 0 <= point.y < height):
                raise DataError(self.root / "points.json",
                                f"point ({point.x}, {point.y}) of image {image_id!r} lies outside "
                                f"the {width}x{height} image")
        no_background = (scribble is not None and not bool((scribble == 0).any())
                         and self.background_is_scribbled)
        return Sample(image_id=image_id, image=image, boxes=boxes, label=label,
                      instance=instance, scribble=scribble, points=points,
                      tags=self.tags(image_id, boxes), image_path=image_path,
                      no_background=no_background)
