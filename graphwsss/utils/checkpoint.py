"""Loading ``.pt`` files without running code from them.

``torch.load(weights_only=True)`` accepts tensors and plain Python values (dicts, lists,
tuples, str, int, float, bool, None) and refuses everything else, so a crafted pickle cannot
call a function while it loads. Every checkpoint graphwsss writes holds only such values
(model, optimizer and scheduler state dicts, the epoch, the training log).
"""

from __future__ import annotations

import os

import torch

from graphwsss.data.errors import DataError

_UNPICKLER_MARKER = "WeightsUnpickler error:"


def load_safely(path: str | os.PathLike, what: str, map_location: torch.device | str = "cpu",
                hint: str = "") -> object:
    """``torch.load(path, weights_only=True)``; any failure (an unsafe pickle, a corrupt or
    empty file) becomes a :class:`DataError` naming the file, ``what`` it should be, why it
    was refused and ``hint`` (what to do about it)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        raise DataError(path, f"cannot load {what}: {refusal_reason(error)}"
                              f"{'; ' + hint if hint else ''}") from error


def refusal_reason(error: BaseException) -> str:
    """One line saying why ``torch.load`` refused a file (its messages span many lines and
    suggest ``weights_only=False``, which would run the file's code)."""
    text = str(error).strip()
    if _UNPICKLER_MARKER in text:
        detail = text.split(_UNPICKLER_MARKER, 1)[1].strip().split(". ")[0].strip()
        detail = detail.splitlines()[0].strip() if detail else "unsupported content"
        return (f"it holds more than tensors and plain Python values ({detail}); "
                "it was not loaded, since unpickling it could run code")
    if not text:
        return f"the file is empty or truncated ({type(error).__name__})"
    return text.splitlines()[0].split(". ")[0]
