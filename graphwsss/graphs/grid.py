r"""Helpers for radius graphs on a regular ``h x w`` node grid (docs/method.md §5).

A node is a stride-8 pixel; node ``n = row * w + col``. A radius graph joins node ``i = (y, x)``
to every node ``j = (y + dy, x + dx)`` with ``(dy, dx)`` in a fixed list of *offsets* (the window,
:func:`radius_offsets`). Such a graph has two equivalent forms:

* **grid form** ``grid_weight[o, y, x]``: the weight of the edge from the neighbour at offset
  ``o`` of ``(y, x)`` to ``(y, x)``; ``0`` means no edge. ``[O, h, w]``, dense over the window,
  which lets per-edge quantities be computed with one shifted tensor per offset
  (:func:`shift`, :func:`pairwise_grid`) instead of gathers, and never with loops over pixels;
* **edge form** ``(edge_index, edge_weight)`` in the PyG convention: ``edge_index[0]`` is the
  source ``j`` (the neighbour, whose message is sent), ``edge_index[1]`` the target ``i`` (which
  aggregates). :func:`grid_to_edges` and :func:`edges_to_grid` convert between the two.

All functions work on the device of their inputs and are differentiable where their outputs are
floating point.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.utils.shapes import check_shape, describe

WindowShape = Literal["disc", "square"]


def radius_offsets(radius: int, shape: WindowShape = "disc",
                   device: torch.device | str | None = None) -> Tensor:
    r"""The window of a radius graph as ``(dy, dx)`` offsets, ``(0, 0)`` first.

    ``disc``: :math:`dy^2 + dx^2 \le r^2` (the paper); ``square``: :math:`|dy|, |dx| \le r` (the
    reference code), docs/method.md §4. The order is fixed: ``(0, 0)`` (the self loop), then the
    other offsets in raster order (``dy`` ascending, then ``dx`` ascending).

    Args:
        radius: window radius ``r >= 0`` in grid units.
        shape: ``"disc"`` or ``"square"``.
        device: device of the result.

    Returns:
        ``[O, 2]`` long tensor of ``(dy, dx)``; ``O = 49`` (disc) or ``81`` (square) for ``r = 4``.
    """
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    if shape not in ("disc", "square"):
        raise ValueError(f"shape must be 'disc' or 'square', got {shape!r}")
    radius = int(radius)
    steps = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    offsets = torch.stack([dy.reshape(-1), dx.reshape(-1)], dim=1)
    if shape == "disc":
        offsets = offsets[(offsets**2).sum(1) <= radius**2]
    is_self = (offsets == 0).all(1)
    return torch.cat([offsets[is_self], offsets[~is_self]])


def check_offsets(offsets: Tensor) -> None:
    """Raise ``ValueError`` unless ``offsets`` is an integer ``[O, 2]`` tensor."""
    check_shape("offsets", offsets, "[O, 2]", shape=(None, 2), what="tensor of (dy, dx)")
    if offsets.is_floating_point() or offsets.is_complex():    # bool passes, as before
        raise ValueError(f"offsets must be an integer [O, 2] tensor of (dy, dx), "
                         f"got {describe(offsets)}")


def shift(t: Tensor, dy: int, dx: int, fill: float = 0.0) -> Tensor:
    r"""Shift the last two dimensions: ``out[..., y, x] = t[..., y + dy, x + dx]``.

    Positions whose source ``(y + dy, x + dx)`` lies outside the grid get ``fill``. Implemented
    with one constant padding and a slice (differentiable, any device).

    Args:
        t: ``[..., H, W]``.
        dy, dx: integer offsets (any sign, any size).
        fill: value for positions without a source.

    Returns:
        ``[..., H, W]``, same dtype and device as ``t``.
    """
    if t.ndim < 2:
        raise ValueError(f"t must have at least 2 dimensions [..., H, W], "
                         f"got shape {tuple(t.shape)}")
    dy, dx = int(dy), int(dx)
    height, width = t.shape[-2:]
    padded = F.pad(t, (max(-dx, 0), max(dx, 0), max(-dy, 0), max(dy, 0)), value=fill)
    top, left = max(dy, 0), max(dx, 0)
    return padded[..., top:top + height, left:left + width]


def neighbor_valid(h: int, w: int, offsets: Tensor,
                   device: torch.device | str | None = None) -> Tensor:
    """Whether the neighbour ``(y + dy, x + dx)`` of each node lies inside the ``h x w`` grid.

    Args:
        h, w: grid size.
        offsets: ``[O, 2]`` ``(dy, dx)``.
        device: device of the result (default: that of ``offsets``).

    Returns:
        ``[O, h, w]`` bool.
    """
    check_offsets(offsets)
    device = offsets.device if device is None else device
    offsets = offsets.to(device)
    rows = torch.arange(h, device=device).view(1, h, 1) + offsets[:, 0].view(-1, 1, 1)
    cols = torch.arange(w, device=device).view(1, 1, w) + offsets[:, 1].view(-1, 1, 1)
    return ((rows >= 0) & (rows < h)) & ((cols >= 0) & (cols < w))


def pairwise_grid(fn: Callable[[Tensor, Tensor], Tensor], a: Tensor, offsets: Tensor, *,
                  symmetric: bool = False, fill: float = 0.0) -> Tensor:
    r"""Evaluate a pairwise function over every node and every offset of a window.

    .. math::
        \mathrm{out}[\ldots, o, y, x] = \mathrm{fn}\big(a[\ldots, :, y, x],\;
        a[\ldots, :, y + dy_o, x + dx_o]\big)

    and ``fill`` where the neighbour is outside the grid. ``fn(center, neighbour)`` receives two
    aligned crops ``[..., C, h', w']`` and returns ``[..., h', w']`` (e.g. the L1 distance
    ``(center - neighbour).abs().sum(-3)``); it must act per pixel. The loop runs over offsets
    only (``O`` of them), each step on the region where the neighbour exists, so the cost is
    ``O`` vectorised calls and no padded copies of ``a``.

    Args:
        fn: per-pixel pairwise function, see above.
        a: ``[..., C, h, w]`` node values (any leading batch dimensions).
        offsets: ``[O, 2]`` ``(dy, dx)``.
        symmetric: declare ``fn(u, v) == fn(v, u)``; then ``fn`` is evaluated once per pair of
            opposite offsets and the value at ``-o`` is the value at ``o`` shifted by ``-o``
            (halves the work for distances and kernels).
        fill: value where the neighbour is outside the grid.

    Returns:
        ``[..., O, h, w]``.
    """
    check_offsets(offsets)
    if a.ndim < 3:
        raise ValueError(f"a must be a [..., C, h, w] tensor, got {describe(a)}")
    height, width = a.shape[-2:]
    offset_list = [tuple(o) for o in offsets.tolist()]
    position = {o: k for k, o in enumerate(offset_list)}
    results: list[Tensor | None] = [None] * len(offset_list)
    for k, (dy, dx) in enumerate(offset_list):
        if results[k] is not None:
            continue
        rows, cols = height - abs(dy), width - abs(dx)
        if rows <= 0 or cols <= 0:
            results[k] = a.new_full((*a.shape[:-3], height, width), fill)
            continue
        y0, x0 = max(-dy, 0), max(-dx, 0)
        center = a[..., y0:y0 + rows, x0:x0 + cols]
        neighbour = a[..., y0 + dy:y0 + dy + rows, x0 + dx:x0 + dx + cols]
        value = fn(center, neighbour)
        if value.shape != center.shape[:-3] + center.shape[-2:]:
            raise ValueError(f"fn must return {tuple(center.shape[:-3] + center.shape[-2:])} "
                             f"for crops {tuple(center.shape)}, got {tuple(value.shape)}")
        results[k] = F.pad(value, (x0, max(dx, 0), y0, max(dy, 0)), value=fill)
        mirror = position.get((-dy, -dx))
        if symmetric and mirror is not None and results[mirror] is None:
            results[mirror] = shift(results[k], -dy, -dx, fill=fill)
    return torch.stack(results, dim=-3)


def grid_to_edges(grid_weight: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    r"""Grid form ``[O, h, w]`` to PyG edges, one edge per ``grid_weight[o, y, x] > 0``.

    The edge runs from the neighbour ``j = (y + dy_o) w + (x + dx_o)`` (source,
    ``edge_index[0]``) to ``i = y w + x`` (target, ``edge_index[1]``). Edges are sorted by target,
    then by offset order. Entries whose neighbour lies outside the grid are ignored.

    Args:
        grid_weight: ``[O, h, w]`` edge weights, ``0`` (or less) for no edge.
        offsets: ``[O, 2]`` ``(dy, dx)``.

    Returns:
        ``edge_index`` ``[2, E]`` long and ``edge_weight`` ``[E]`` (dtype of ``grid_weight``).
    """
    check_offsets(offsets)
    check_shape("grid_weight", grid_weight, f"[O, h, w] = [{offsets.shape[0]}, h, w]",
                shape=(offsets.shape[0], None, None))
    _, height, width = grid_weight.shape
    device = grid_weight.device
    offsets = offsets.to(device)
    keep = (grid_weight > 0) & neighbor_valid(height, width, offsets, device)
    # [h, w, O] order: nonzero enumerates target-major, offset-minor.
    rows, cols, k = keep.permute(1, 2, 0).nonzero(as_tuple=True)
    target = rows * width + cols
    source = (rows + offsets[k, 0]) * width + (cols + offsets[k, 1])
    return torch.stack([source, target]), grid_weight[k, rows, cols]


def edges_to_grid(edge_index: Tensor, edge_weight: Tensor, offsets: Tensor,
                  h: int, w: int) -> Tensor:
    """PyG edges to the grid form, the inverse of :func:`grid_to_edges`.

    Args:
        edge_index: ``[2, E]`` (source = neighbour, target = node).
        edge_weight: ``[E]``.
        offsets: ``[O, 2]``; every edge's displacement source - target must be one of them.
        h, w: grid size.

    Returns:
        ``[O, h, w]`` with the edge weights, ``0`` where there is no edge (a duplicated edge
        keeps one of its weights).
    """
    check_offsets(offsets)
    check_shape("edge_index", edge_index, "[2, E]", shape=(2, None))
    check_shape("edge_weight", edge_weight, f"[E] = [{edge_index.shape[1]}]",
                shape=(edge_index.shape[1],))
    device = edge_weight.device
    offsets = offsets.to(device)
    source, target = edge_index.to(device)
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= h * w):
        raise ValueError(f"edge_index has nodes outside the {h}x{w} grid")
    dy = torch.div(source, w, rounding_mode="floor") - torch.div(target, w, rounding_mode="floor")
    dx = source % w - target % w
    # Look-up table from (dy, dx) to offset position over the window's bounding box.
    reach = int(offsets.abs().max()) if offsets.numel() else 0
    side = 2 * reach + 1
    table = torch.full((side * side,), -1, dtype=torch.long, device=device)
    table[(offsets[:, 0] + reach) * side + offsets[:, 1] + reach] = torch.arange(
        offsets.shape[0], device=device)
    inside = (dy.abs() <= reach) & (dx.abs() <= reach)
    k = torch.where(inside, table[((dy + reach) * side + dx + reach).clamp(0, side * side - 1)],
                    torch.full_like(dy, -1))
    if bool((k < 0).any()):
        raise ValueError("edge_index has edges whose displacement is not in offsets")
    grid = edge_weight.new_zeros(offsets.shape[0] * h * w)
    grid[k * (h * w) + target] = edge_weight
    return grid.view(offsets.shape[0], h, w)


def downsample_image(image: Tensor, h: int, w: int) -> Tensor:
    """Mean colour of each grid cell: area (average) pooling of the image to ``h x w``.

    Cell ``(y, x)`` averages image rows ``[floor(y H / h), ceil((y + 1) H / h))`` and likewise
    for columns (``adaptive_avg_pool2d``), so the grid spans the whole image.

    Args:
        image: ``[3, H, W]`` or ``[B, 3, H, W]`` float (any channel count works).
        h, w: grid size.

    Returns:
        ``[3, h, w]`` or ``[B, 3, h, w]``.
    """
    if image.ndim not in (3, 4) or not image.is_floating_point():
        raise ValueError(f"image must be a float [C, H, W] or [B, C, H, W] tensor in [0, 1], "
                         f"got {describe(image)}")
    return F.adaptive_avg_pool2d(image, (int(h), int(w)))
