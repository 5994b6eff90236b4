"""Argument checks on tensors: one helper for the "``name`` must be a ``[...]`` tensor" errors.

Every public function of the package that takes tensors checks them with :func:`check_shape`
(or, for checks no layout expresses, names the value with :func:`describe`), so that the error
messages read alike: ``logits must be a float [B, C, h, w] tensor, got torch.int64 tensor of
shape (2, 3)``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
from torch import Tensor

DtypeKind = Literal["float", "integer", "bool"]


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: dtype and shape of a tensor or an
    array, else its type name."""
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    if hasattr(value, "dtype") and hasattr(value, "shape"):     # np.ndarray and alike
        return f"{value.dtype} array of shape {tuple(value.shape)}"
    return type(value).__name__


def has_dtype(value: Tensor, kind: Optional[DtypeKind]) -> bool:
    """Whether ``value``'s dtype is of ``kind`` (``None``: any)."""
    if kind is None:
        return True
    if kind == "float":
        return value.is_floating_point()
    if kind == "bool":
        return value.dtype == torch.bool
    if kind == "integer":
        return not value.is_floating_point() and not value.is_complex() \
            and value.dtype != torch.bool
    raise ValueError(f"unknown dtype kind {kind!r}; known: float, integer, bool")


def check_shape(name: str, value: Any, layout: str, *, dims: Optional[int] = None,
                shape: Optional[Sequence[Optional[int]]] = None,
                dtype: Optional[DtypeKind] = None, what: str = "tensor") -> Tensor:
    """Raise ``ValueError("<name> must be a [<dtype>] <layout> <what>, got ...")`` unless
    ``value`` is a tensor with ``dims`` dimensions, sizes ``shape`` (``None`` entries: any; its
    length sets ``dims`` when ``dims`` is not given) and a dtype of kind ``dtype``.

    Args:
        name: the argument's name, as the caller's signature spells it.
        value: the argument.
        layout: its layout as the docstrings write it, e.g. ``"[B, h, w]"`` or
            ``"[B, h, w] = [2, 5, 6]"``.
        dims: the number of dimensions, or ``None`` for any.
        shape: the expected sizes, ``None`` for a free one.
        dtype: ``"float"``, ``"integer"``, ``"bool"`` or ``None`` for any.
        what: the noun of the message (``"tensor"``, ``"mask"``, ...).

    Returns:
        ``value``, for chaining.
    """
    if dims is None and shape is not None:
        dims = len(shape)
    fits = (isinstance(value, Tensor)
            and (dims is None or value.ndim == dims)
            and (shape is None or all(expected is None or size == expected
                                      for size, expected in zip(value.shape, shape)))
            and has_dtype(value, dtype))
    if not fits:
        kind = f"{dtype} " if dtype else ""
        article = "an" if (kind or layout)[:1] in "aeiou" else "a"
        raise ValueError(f"{name} must be {article} {kind}{layout} {what}, got {describe(value)}")
    return value
