r"""The affinity attention layer (3.17–3.18, :mod:`graphwsss.nn.affinity_attention`) on grid
radius graphs (docs/method.md §5, the grid form of :mod:`graphwsss.graphs.grid`), tiled: what the
A²GNN runs.

The grid is cut into ``T x T`` tiles and each tile attends to the block of nodes around it
(:class:`TiledWindow`), so cosines and aggregation are batched dense matrix products over tiles,
masked to the window. A custom autograd function keeps only ``h``, ``P`` and the cosines for the
backward pass (no copy of the features per offset or per tile) and recomputes the tiles there.
Same values and gradients as :class:`~graphwsss.nn.affinity_attention.AffinityAttentionConv` on
the same graph.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.graphs.grid import check_offsets
from graphwsss.nn.affinity_attention import attention_logits, check_form, masked_softmax
from graphwsss.utils.shapes import check_shape


class TiledWindow:
    r"""A grid window laid out for tiled attention.

    The node grid is cut into ``T x T`` tiles. The window of every node of a tile lies in the
    tile's *neighbourhood*, the ``S x S`` block (``S = T + 2r``) around it, so one tile's cosines
    and its aggregation are two dense products ``[T², C] x [C, S²]`` and ``[T², S²] x [S², C]``
    (batched over tiles), with the window a fixed ``[T², S²]`` pattern inside the block. The
    products are ``S² / O`` times larger than the window needs (about 3 for ``r = 4``,
    ``T = 8``), but run as matrix products instead of one memory-bound pass per offset.

    Args:
        offsets: ``[O, 2]`` ``(dy, dx)`` of the window.
        tile: ``T`` (at least 1).

    Attributes:
        offset_index: ``[T², S²]`` long, the offset joining tile node ``q`` to neighbourhood
            node ``s`` (``-1``: not in the window).
    """

    def __init__(self, offsets: Tensor, tile: int = 8) -> None:
        check_offsets(offsets)
        pairs = [(int(dy), int(dx)) for dy, dx in offsets.tolist()]
        if len(set(pairs)) != len(pairs):
            raise ValueError("offsets must not repeat")
        self.radius = max((max(abs(dy), abs(dx)) for dy, dx in pairs), default=0)
        self.tile = max(int(tile), 1)
        self.side = self.tile + 2 * self.radius
        span = 2 * self.radius + 1
        table = torch.full((span * span,), -1, dtype=torch.long)
        for k, (dy, dx) in enumerate(pairs):
            table[(dy + self.radius) * span + dx + self.radius] = k
        inner = torch.arange(self.tile * self.tile)
        outer = torch.arange(self.side * self.side)
        dy = (outer // self.side).view(1, -1) - self.radius - (inner // self.tile).view(-1, 1)
        dx = (outer % self.side).view(1, -1) - self.radius - (inner % self.tile).view(-1, 1)
        inside = (dy.abs() <= self.radius) & (dx.abs() <= self.radius)
        code = ((dy + self.radius) * span + dx + self.radius).clamp(0, span * span - 1)
        self.offset_index = torch.where(inside, table[code], torch.full_like(code, -1))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Tiles per column and per row of a ``height x width`` grid."""
        return -(-height // self.tile), -(-width // self.tile)

    def to_tiles(self, t: Tensor) -> Tensor:
        """``[B, H, W, C]`` to ``[B * tiles, T², C]`` (zero-padded to whole tiles)."""
        batch, height, width, channels = t.shape
        rows, cols = self.grid(height, width)
        t = F.pad(t, (0, 0, 0, cols * self.tile - width, 0, rows * self.tile - height))
        t = t.view(batch, rows, self.tile, cols, self.tile, channels).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(batch * rows * cols, self.tile * self.tile, channels)

    def from_tiles(self, t: Tensor, height: int, width: int) -> Tensor:
        """``[B * tiles, T², C]`` back to ``[B, H, W, C]`` (the inverse of :meth:`to_tiles`)."""
        rows, cols = self.grid(height, width)
        channels = t.shape[-1]
        t = t.view(-1, rows, cols, self.tile, self.tile, channels).permute(0, 1, 3, 2, 4, 5)
        return t.reshape(-1, rows * self.tile, cols * self.tile, channels)[:, :height, :width]

    def neighbourhoods(self, t: Tensor) -> Tensor:
        """``[B, H, W, C]`` to ``[B * tiles, S², C]``: each tile's neighbourhood (0 outside)."""
        batch, height, width, channels = t.shape
        rows, cols = self.grid(height, width)
        r = self.radius
        t = F.pad(t, (0, 0, r, cols * self.tile - width + r, r, rows * self.tile - height + r))
        t = t.unfold(1, self.side, self.tile).unfold(2, self.side, self.tile)
        return t.permute(0, 1, 2, 4, 5, 3).reshape(batch * rows * cols, self.side * self.side,
                                                  channels)

    def fold(self, t: Tensor, height: int, width: int) -> Tensor:
        """The adjoint of :meth:`neighbourhoods`: ``[B * tiles, S², C]`` summed into ``[B, H, W, C]``."""
        rows, cols = self.grid(height, width)
        channels, tile, side = t.shape[-1], self.tile, self.side
        spans = -(-side // tile)  # tile-sized blocks per neighbourhood side
        t = t.view(-1, rows, cols, side, side, channels)
        canvas = t.new_zeros(t.shape[0], (rows + spans) * tile, (cols + spans) * tile, channels)
        blocks = canvas.view(t.shape[0], rows + spans, tile, cols + spans, tile, channels)
        # Block (a, b) of every neighbourhood lands on a disjoint set of nodes: one add each.
        for a in range(spans):
            size_y = min(tile, side - a * tile)
            for b in range(spans):
                size_x = min(tile, side - b * tile)
                part = t[:, :, :, a * tile:a * tile + size_y, b * tile:b * tile + size_x]
                blocks[:, a:a + rows, :size_y, b:b + cols, :size_x] += part.permute(
                    0, 1, 3, 2, 4, 5)
        r = self.radius
        return canvas[:, r:r + height, r:r + width]


class GridTiles:
    """A batch of grid radius graphs in the tiled layout of :class:`TiledWindow`.

    Build with :func:`grid_tiles`; reuse for every layer on the same graphs.

    Attributes:
        window: the :class:`TiledWindow`.
        shape: ``(B, H, W)``.
        edge_weight: ``[B * tiles, T², S²]`` :math:`E` (0 where there is no edge).
        present: ``[B * tiles, T², S²]`` bool, the edges that exist.
    """

    def __init__(self, window: TiledWindow, shape: tuple[int, int, int], edge_weight: Tensor,
                 present: Tensor) -> None:
        self.window, self.shape = window, shape
        self.edge_weight, self.present = edge_weight, present
        self._edge_terms: dict[float, Tensor] = {}

    def edge_term(self, beta: float) -> Tensor:
        """:math:`\beta E` ``[B * tiles, T², S²]``, computed once per ``beta``."""
        if beta not in self._edge_terms:
            self._edge_terms[beta] = beta * self.edge_weight
        return self._edge_terms[beta]

    @property
    def tiles_per_image(self) -> int:
        rows, cols = self.window.grid(self.shape[1], self.shape[2])
        return rows * cols


def grid_tiles(grid_weight: Tensor, offsets: Tensor, node_mask: Optional[Tensor] = None,
               tile: int = 8) -> GridTiles:
    """Lay out grid radius graphs for :func:`tiled_affinity_attention`.

    An edge exists where ``grid_weight > 0`` and both of its nodes are inside the grid and in
    ``node_mask`` (so that padding never takes part, whatever ``grid_weight`` holds there).

    Args:
        grid_weight: ``[B, O, H, W]`` edge weights (``0`` = no edge).
        offsets: ``[O, 2]`` ``(dy, dx)``.
        node_mask: ``[B, H, W]`` bool, the real nodes; ``None`` for all.
        tile: tile side ``T`` (see :class:`TiledWindow`).
    """
    check_offsets(offsets)
    check_shape("grid_weight", grid_weight, f"[B, O, H, W] (O = {offsets.shape[0]})",
                shape=(None, offsets.shape[0], None, None))
    batch, _, height, width = grid_weight.shape
    window = TiledWindow(offsets, tile)
    if node_mask is None:
        node_mask = torch.ones(batch, height, width, dtype=torch.bool, device=grid_weight.device)
    nodes = node_mask.to(grid_weight.dtype).unsqueeze(-1)
    rows, cols = window.grid(height, width)
    index = window.offset_index.to(grid_weight.device)
    in_window = index >= 0
    index = index.clamp_min(0).expand(batch * rows * cols, -1, -1)
    # [tiles, T², O] weights per offset, gathered into the [tiles, T², S²] block pattern.
    weight = torch.gather(window.to_tiles(grid_weight.permute(0, 2, 3, 1)), 2, index)
    present = ((weight > 0) & in_window
               & (window.to_tiles(nodes) > 0)                             # the node i
               & (window.neighbourhoods(nodes) > 0).transpose(1, 2))      # its neighbour j
    return GridTiles(window, (batch, height, width), weight * present, present)


NORM_EPS = 1e-12  # as F.normalize


def _norms(h: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., 1]`` norms over the last dimension and ``1 / max(norm, eps)`` (as ``F.normalize``)."""
    norm = h.norm(dim=-1, keepdim=True)
    return norm, norm.clamp_min(NORM_EPS).reciprocal()


class _TiledAffinityAttention(torch.autograd.Function):
    """One affinity attention layer in the tiled layout. Saves ``h``, ``w``, ``P`` and the
    cosines (``[tiles, T², S²]``); the backward pass recomputes the tiles of ``h``."""

    @staticmethod
    def forward(ctx, h: Tensor, w: Tensor, tiles: GridTiles, beta: float, form: str) -> Tensor:
        window = tiles.window
        height, width = h.shape[1:3]
        _, inverse = _norms(h)
        center, around = window.to_tiles(h), window.neighbourhoods(h)
        cos = torch.bmm(center, around.transpose(1, 2))
        cos.mul_(window.to_tiles(inverse)).mul_(window.neighbourhoods(inverse).transpose(1, 2))
        w_tiles = w.repeat_interleave(tiles.tiles_per_image).view(-1, 1, 1)
        logits = attention_logits(cos, tiles.edge_term(beta), w_tiles, form, tiles.present)
        p = masked_softmax(logits, dim=-1)
        del logits
        ctx.save_for_backward(h, w, p, cos)
        ctx.tiles = tiles
        return window.from_tiles(torch.bmm(p, around), height, width)

    @staticmethod
    def backward(ctx, grad: Tensor):
        h, w, p, cos = ctx.saved_tensors
        tiles: GridTiles = ctx.tiles
        window = tiles.window
        height, width = h.shape[1:3]
        norm, inverse = _norms(h)
        center, around = window.to_tiles(h), window.neighbourhoods(h)
        grad_tiles = window.to_tiles(grad)
        w_tiles = w.repeat_interleave(tiles.tiles_per_image).view(-1, 1, 1)
        # Softmax: dL/dlogits = p (dL/dp - sum p dL/dp); masked entries have p = 0.
        grad_logits = torch.bmm(grad_tiles, around.transpose(1, 2)).mul_(p)
        grad_logits.addcmul_(p, grad_logits.sum(-1, keepdim=True), value=-1.0)
        # The edge term beta [cos > 0] E is piecewise constant in cos: only w cos has a slope,
        # dL/dcos = w dL/dlogits. (w is constant per tile: it scales the sums below.)
        grad_logits_times_cos = grad_logits * cos
        grad_w = grad_logits_times_cos.sum((1, 2)).view(w.shape[0], -1).sum(1)
        # cos = (h_i . h_j) |h_i|^-1 |h_j|^-1.
        grad_dots = grad_logits.mul_(w_tiles * window.to_tiles(inverse))
        grad_dots.mul_(window.neighbourhoods(inverse).transpose(1, 2))
        grad_around = torch.bmm(grad_dots.transpose(1, 2), center)
        grad_around.baddbmm_(p.transpose(1, 2), grad_tiles)  # the aggregation P h
        grad_h = window.from_tiles(torch.bmm(grad_dots, around), height, width)
        grad_h = grad_h + window.fold(grad_around, height, width)
        # cos is linear in each inverse norm, so (dL/d|h|^-1) |h|^-1 = sum of dL/dcos * cos over
        # the node's appearances as i (rows) and as j (columns); d|h|^-1/dh = -|h|^-3 h.
        grad_inverse_times_inverse = (
            window.from_tiles(grad_logits_times_cos.sum(2, keepdim=True) * w_tiles, height, width)
            + window.fold((grad_logits_times_cos.sum(1) * w_tiles[:, 0]).unsqueeze(-1), height,
                          width))
        slope = inverse.square() * (norm > NORM_EPS)
        grad_h = grad_h - (grad_inverse_times_inverse * slope) * h
        return grad_h, grad_w, None, None, None


def tiled_affinity_attention(h: Tensor, tiles: GridTiles, w: Tensor, beta: float = 10.0,
                             form: str = "reference") -> Tensor:
    """:func:`grid_affinity_attention` on channels-last ``h`` ``[B, H, W, C]`` and prepared
    :class:`GridTiles`; ``w`` ``[B]``. Returns ``[B, H, W, C]``. For callers running several
    layers on one batch of graphs (:class:`graphwsss.nn.a2gnn.A2GNN`)."""
    check_form(form)
    check_shape("h", h, f"[B, H, W, C] (B, H, W = {tiles.shape})", shape=(*tiles.shape, None))
    check_shape("w", w, f"[B] = [{tiles.shape[0]}]", shape=(tiles.shape[0],))
    return _TiledAffinityAttention.apply(h, w, tiles, float(beta), form)


def grid_affinity_attention(h: Tensor, grid_weight: Tensor, offsets: Tensor, w: Tensor,
                            beta: float = 10.0, form: str = "reference") -> Tensor:
    r"""The affinity attention layer (3.17–3.18) on grid radius graphs, batched.

    .. math::
        \mathrm{out}[:, y] = \sum_o P_o[y]\, h[:, y + o], \qquad
        P_o[y] = \operatorname{softmax}_o\big(w \cos(h[y], h[y + o])
            + \beta\,[\cos > 0]\,E_o[y]\big)

    over the offsets ``o`` whose edge exists (``grid_weight > 0``, neighbour inside the grid;
    under ``form="reference"`` also :math:`\cos > 0`). Same values and gradients as
    :class:`AffinityAttentionConv` on ``grid_to_edges(grid_weight[b], offsets)``; computed
    tile by tile (:class:`TiledWindow`), never with an ``[N, N]`` or ``[E, C]`` tensor, and the
    backward pass keeps no copy of ``h`` per offset.

    Args:
        h: ``[B, C, H, W]`` node features.
        grid_weight: ``[B, O, H, W]`` edge weights :math:`E`, ``0`` for no edge (e.g. padding).
        offsets: ``[O, 2]`` ``(dy, dx)`` of the window.
        w: ``[B]`` (or a single value) the layer's scalar per image.
        beta: weight of the edge term.
        form: ``"reference"`` or ``"paper"``.

    Returns:
        ``[B, C, H, W]``.
    """
    check_form(form)
    check_offsets(offsets)
    check_shape("h", h, "[B, C, H, W]", dims=4)
    batch, _, height, width = h.shape
    expected = (batch, offsets.shape[0], height, width)
    check_shape("grid_weight", grid_weight, f"[B, O, H, W] = {list(expected)}", shape=expected)
    w = torch.as_tensor(w, dtype=h.dtype, device=h.device).reshape(-1)
    if w.numel() == 1:
        w = w.expand(batch)
    if w.numel() != batch:
        raise ValueError(f"w must hold 1 or B = {batch} values, got {w.numel()}")
    tiles = grid_tiles(grid_weight, offsets.to(grid_weight.device))
    out = tiled_affinity_attention(h.permute(0, 2, 3, 1), tiles, w, beta, form)
    return out.permute(0, 3, 1, 2)
