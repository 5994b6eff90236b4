"""Image-level tags from a file, as users keep them: JSON or CSV lists of class names per image.

Accepted forms (class names as in ``labels.txt``; the background is never a tag)::

    tags.json   {"2007_000032": ["aeroplane", "person"], "2007_000039": ["tvmonitor"]}
    tags.csv    2007_000032,aeroplane,person        (one image per line; ";" or "," between
                2007_000039,tvmonitor                classes; an optional header "image,...")

Without a tags file the tags are the classes named in ``Annotations/<id>.xml``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from graphwsss.data.errors import DataError
from graphwsss.data.ids import check_image_ids, read_json_object


def read_tags(path: str | os.PathLike, class_ids: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Per image id, the sorted foreground class ids named in a JSON or CSV tags file.

    Raises :class:`DataError` naming the file for unreadable files, unknown class names and
    background tags.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "tags file is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read tags file ({error})") from error
    if path.suffix.lower() == ".json":
        raw = read_json_object(path, "tags JSON")
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise DataError(path, "tags JSON must map image ids to lists of class names")
        check_image_ids(((f"entry {index}", image_id) for index, image_id in enumerate(raw)),
                        path)
        entries = {str(image_id): names for image_id, names in raw.items()}
    else:
        rows = []
        for number, row in enumerate(csv.reader(text.splitlines()), start=1):
            cells = [cell.strip() for field in row for cell in field.split(";") if cell.strip()]
            if not cells or (number == 1 and cells[0].lower() in ("image", "image_id", "id")):
                continue
            rows.append((f"line {number}", cells))
        check_image_ids(((where, cells[0]) for where, cells in rows), path)
        entries = {cells[0]: cells[1:] for _, cells in rows}
    tags = {}
    for image_id, names in entries.items():
        ids = set()
        for name in names:
            if not isinstance(name, str) or name not in class_ids:
                raise DataError(path, f"image {image_id!r}: class {name!r} is not in labels.txt")
            if class_ids[name] == 0:
                raise DataError(path, f"image {image_id!r}: the background ({name!r}) is not a tag")
            ids.add(class_ids[name])
        tags[image_id] = tuple(sorted(ids))
    return tags
