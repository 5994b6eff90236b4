"""Atomic file writes: write to a temporary name in the same folder, then rename.

A crash or an exception while writing never leaves a half-written file under the final name,
and an existing file is replaced only once the new one is complete. Finished files get the
mode a plain ``open(path, "w")`` would give them (``0o666`` less the process umask), not the
temporary file's private 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

# The umask can only be read by setting it; read it once, at import, and put it straight back.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
"""Mode of every file written through :func:`atomic_path` (0o644 under umask 022)."""


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``root / path`` (``path`` relative to ``root``, or absolute), checked to stay inside
    ``root`` once resolved (``..`` and symbolic links followed); returned as given, unresolved.

    Raises :class:`~graphwsss.data.errors.DataError` (a ``ValueError``) naming the path when
    it resolves outside ``root``: an output path built from an image id must never write
    elsewhere.
    """
    joined = Path(root) / path
    resolved_root, resolved = Path(root).resolve(), joined.resolve()
    if resolved != resolved_root and resolved_root not in resolved.parents:
        from graphwsss.data.errors import DataError  # here: graphwsss.data is heavy to import

        raise DataError(joined, f"resolves to {resolved}, outside the run folder "
                                f"{resolved_root}; refusing to write there")
    return joined


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the suffix of ``path`` so that writers which pick a format
    from the extension (PIL, OpenCV, ``torch.save``) behave as for the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)
