"""Image ids are file stems: a run writes ``<out>/<folder>/<id>.png``, so an id must name one
file inside one folder. :func:`check_image_ids` refuses ids that would escape it or collide.
"""

from __future__ import annotations

import json
import ntpath
import os
from typing import Iterable

from graphwsss.data.errors import DataError


def image_id_problem(image_id: object) -> str | None:
    """Why ``image_id`` cannot name a file in a folder, or ``None`` when it can."""
    if not isinstance(image_id, str):
        return f"image id {image_id!r} is not a string"
    if not image_id:
        return "empty image id"
    if "\x00" in image_id:
        return f"image id {image_id!r} contains a NUL character"
    if os.path.isabs(image_id) or ntpath.isabs(image_id) or ntpath.splitdrive(image_id)[0]:
        return f"image id {image_id!r} is an absolute path"
    if "/" in image_id or "\\" in image_id:
        return f"image id {image_id!r} contains a path separator ('/' or '\\')"
    if image_id in (".", ".."):
        return f"image id {image_id!r} names a folder, not a file"
    return None


def check_image_ids(ids: Iterable[tuple[str, object]], source: str | os.PathLike,
                    unique: bool = True) -> list[str]:
    """Check ``(where, id)`` pairs read from ``source`` (``where`` such as ``"line 3"``).

    Returns the ids. Raises :class:`DataError` naming ``source``, the place and the problem for
    the first id that is empty, holds a path separator or NUL, is ``.``/``..`` or absolute, or
    (``unique``) repeats an earlier id.
    """
    seen: dict[str, str] = {}
    checked = []
    for where, image_id in ids:
        problem = image_id_problem(image_id)
        if problem is None and unique and image_id in seen:
            problem = f"image id {image_id!r} repeats {seen[image_id]}"
        if problem is not None:
            raise DataError(source, f"{where}: {problem}")
        seen.setdefault(image_id, where)
        checked.append(image_id)
    return checked


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def read_json_object(path: str | os.PathLike, what: str) -> object:
    """Parse the JSON file ``path`` (``what`` names it in messages), refusing an object that
    names a key twice (``json`` would silently keep the last, e.g. of two entries for one image).
    Raises :class:`DataError` naming the file."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file, object_pairs_hook=_unique_keys)
    except _RepeatedKey as error:
        raise DataError(path, f"{what}: key {error.key!r} appears twice") from error
    except FileNotFoundError as error:
        raise DataError(path, f"{what} is missing") from error
    except json.JSONDecodeError as error:
        raise DataError(path, f"{what}: invalid JSON ({error})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(path, f"cannot read {what} ({error})") from error
