r"""Multi-point loss :math:`L_{mp}` for box supervision (docs/method.md §6, eqs. 3.23–3.26).

For a box :math:`B` of class :math:`c` on the prediction grid, each row and each column of the
box contributes the node of the box with the highest probability :math:`O^c` in that row or
column (eqs. 3.23–3.24); their union is the selected set :math:`\mathcal{K}_B`. With
:math:`\mathcal{K} = \bigsqcup_B \mathcal{K}_B` (a node selected by two boxes counts twice) and
:math:`\mathcal{P}` the unordered pairs :math:`\{i, j\}, i \neq j` of nodes selected in the same
box, over all boxes,

.. math::
    L_{mp} = -\frac{1}{|\mathcal{K}|}\sum_{(j, c) \in \mathcal{K}} \log O_j^{c}
             + \frac{1}{|\mathcal{P}|}\sum_{\{i, j\} \in \mathcal{P}}
               \bigl(1 - \cos(H_i, H_j)\bigr)

(eqs. 3.25–3.26), where :math:`H = H^{L+1}` are the last hidden features. The selection is an
argmax and carries no gradient; the loss is differentiable in the logits and in :math:`H`.

Boxes are given on the prediction grid as ``LongTensor[M, 4]`` of ``(x0, y0, x1, y1)``, half-open
grid cells (columns ``x0 <= x < x1``, rows ``y0 <= y < y1``), with ``box_classes``
``LongTensor[M]``; :func:`boxes_to_grid` maps pixel boxes to that form. Node ``n = row * w + col``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.data.records import Box

__all__ = ["boxes_to_grid", "check_grid_boxes", "select_multi_points", "multi_point_loss"]


def boxes_to_grid(boxes: Sequence[Box], image_size: tuple[int, int], grid_size: tuple[int, int],
                  device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    r"""Pixel boxes to half-open grid-cell boxes.

    With strides :math:`s_y = H / h` and :math:`s_x = W / w`, a pixel box
    :math:`[x_0, x_1) \times [y_0, y_1)` covers the cells
    :math:`[\lfloor x_0 / s_x \rfloor, \lceil x_1 / s_x \rceil) \times
    [\lfloor y_0 / s_y \rfloor, \lceil y_1 / s_y \rceil)` (every cell it touches), clipped to the
    grid and at least one cell wide and high (a 1-pixel box gets its cell). Computed in exact
    integer arithmetic.

    Args:
        boxes: ``M`` :class:`~graphwsss.data.Box` in pixel coordinates of the ``(H, W)`` image.
        image_size: ``(H, W)`` of the image.
        grid_size: ``(h, w)`` of the prediction grid.
        device: where to create the outputs (default CPU).

    Returns:
        ``(grid_boxes, box_classes)``: ``LongTensor[M, 4]`` of ``(x0, y0, x1, y1)`` grid cells and
        ``LongTensor[M]`` class ids.
    """
    height, width = (int(v) for v in image_size)
    grid_h, grid_w = (int(v) for v in grid_size)
    if min(height, width, grid_h, grid_w) <= 0:
        raise ValueError(f"image_size {image_size} and grid_size {grid_size} must be positive")

    def cells(start: int, end: int, size: int, grid: int) -> tuple[int, int]:
        first = min(max(start * grid // size, 0), grid - 1)            # floor(start / stride)
        last = min(max(-(-end * grid // size), first + 1), grid)       # ceil(end / stride)
        return first, last

    rows = []
    for box in boxes:
        x0, x1 = cells(box.x0, box.x1, width, grid_w)
        y0, y1 = cells(box.y0, box.y1, height, grid_h)
        rows.append((x0, y0, x1, y1))
    grid_boxes = torch.tensor(rows, dtype=torch.long, device=device).reshape(-1, 4)
    box_classes = torch.tensor([box.class_id for box in boxes], dtype=torch.long, device=device)
    return grid_boxes, box_classes


def check_grid_boxes(boxes: Tensor, box_classes: Tensor, num_classes: int, height: int,
                     width: int) -> list[tuple[int, int, int, int, int]]:
    """Validate grid boxes and return them as Python ``(x0, y0, x1, y1, class)`` tuples.

    Raises ``ValueError`` unless ``boxes`` is an integer ``[M, 4]`` tensor of non-empty boxes
    inside the ``height x width`` grid and ``box_classes`` an integer ``[M]`` tensor of class ids
    in ``[0, num_classes)``.
    """
    if not isinstance(boxes, Tensor) or boxes.dtype.is_floating_point or boxes.dim() != 2 \
            or boxes.shape[1] != 4:
        raise ValueError("boxes must be an integer [M, 4] tensor of (x0, y0, x1, y1) grid cells")
    if not isinstance(box_classes, Tensor) or box_classes.dtype.is_floating_point \
            or tuple(box_classes.shape) != (boxes.shape[0],):
        raise ValueError(f"box_classes must be an integer [{boxes.shape[0]}] tensor")
    checked = []
    for (x0, y0, x1, y1), cls in zip(boxes.tolist(), box_classes.tolist()):
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"grid box {(x0, y0, x1, y1)} is empty or outside the "
                             f"{height}x{width} grid")
        if not 0 <= cls < num_classes:
            raise ValueError(f"box class {cls} outside [0, {num_classes})")
        checked.append((x0, y0, x1, y1, cls))
    return checked


def select_multi_points(probs: Tensor, boxes: Tensor, box_classes: Tensor) -> list[Tensor]:
    r"""The nodes :math:`\mathcal{K}_B` selected in each box (eqs. 3.23–3.24).

    For a box of class :math:`c`, every row of the box gives its node of highest :math:`O^c`
    among the box's columns and every column its node of highest :math:`O^c` among the box's
    rows (ties: the first); duplicates are removed. No gradient.

    Args:
        probs: ``[K, h, w]`` class probabilities :math:`O = \mathrm{softmax}(Z)` (selecting on
            the logits :math:`Z^c` instead could pick other nodes).
        boxes: ``LongTensor[M, 4]`` half-open ``(x0, y0, x1, y1)`` grid cells.
        box_classes: ``LongTensor[M]`` class of each box.

    Returns:
        ``M`` sorted ``LongTensor[S_m]`` of flat node indices ``row * w + col`` on ``probs``'
        device, ``1 <= S_m <= height + width - 1`` of the box.
    """
    if not isinstance(probs, Tensor) or probs.dim() != 3:
        raise ValueError("probs must be a [K, h, w] tensor")
    num_classes, height, width = probs.shape
    selected = []
    with torch.no_grad():
        for x0, y0, x1, y1, cls in check_grid_boxes(boxes, box_classes, num_classes, height,
                                                    width):
            score = probs[cls, y0:y1, x0:x1]                              # [bh, bw]
            rows = torch.arange(y0, y1, device=probs.device)
            cols = torch.arange(x0, x1, device=probs.device)
            row_best = rows * width + x0 + score.argmax(dim=1)           # one node per row
            col_best = (y0 + score.argmax(dim=0)) * width + cols          # one node per column
            selected.append(torch.unique(torch.cat([row_best, col_best])))
    return selected


def multi_point_loss(logits: Tensor, hidden: Tensor, boxes: Tensor, box_classes: Tensor,
                     selected: list[Tensor] | None = None) -> Tensor:
    r"""Multi-point loss :math:`L_{mp}` of one image (eqs. 3.25–3.26, see the module docstring).

    Args:
        logits: ``[K, h, w]`` class logits (before softmax).
        hidden: ``[C, h, w]`` last hidden features :math:`H^{L+1}`.
        boxes: ``LongTensor[M, 4]`` half-open ``(x0, y0, x1, y1)`` grid cells.
        box_classes: ``LongTensor[M]`` class of each box.
        selected: the output of :func:`select_multi_points`; ``None`` selects on
            ``softmax(logits)`` (detached).

    Returns:
        A scalar tensor: mean cross-entropy of class :math:`c` over all selected nodes plus
        the mean :math:`1 - \cos` over all same-box pairs (0 when there are no pairs). 0, still
        attached to the graph, when there are no boxes.

    Shapes:
        - logits: ``[K, h, w]``, hidden: ``[C, h, w]``, boxes ``[M, 4]``, box_classes ``[M]``
        - output: ``[]``
    """
    if not isinstance(logits, Tensor) or logits.dim() != 3:
        raise ValueError("logits must be a [K, h, w] tensor")
    if not isinstance(hidden, Tensor) or hidden.dim() != 3 or hidden.shape[1:] != logits.shape[1:]:
        raise ValueError(f"hidden must be a [C, h, w] tensor on the logits grid "
                         f"{tuple(logits.shape[1:])}")
    num_classes, height, width = logits.shape
    if selected is None:
        selected = select_multi_points(torch.softmax(logits.detach(), dim=0), boxes, box_classes)
    else:
        check_grid_boxes(boxes, box_classes, num_classes, height, width)
    if len(selected) != boxes.shape[0]:
        raise ValueError(f"selected has {len(selected)} entries for {boxes.shape[0]} boxes")
    zero = logits.sum() * 0.0 + hidden.sum() * 0.0
    if boxes.shape[0] == 0:
        return zero

    nodes = torch.cat(list(selected)).to(logits.device)
    targets = torch.repeat_interleave(box_classes.to(logits.device),
                                      torch.tensor([s.numel() for s in selected],
                                                   device=logits.device))
    flat_logits = logits.reshape(num_classes, -1)
    ce = F.cross_entropy(flat_logits[:, nodes].t(), targets) if nodes.numel() else zero

    flat_hidden = hidden.reshape(hidden.shape[0], -1)
    pair_losses = []
    for box_nodes in selected:
        count = box_nodes.numel()
        if count < 2:
            continue
        unit = F.normalize(flat_hidden[:, box_nodes.to(hidden.device)].t(), dim=1)  # [S, C]
        first, second = torch.triu_indices(count, count, offset=1, device=hidden.device)
        pair_losses.append(1.0 - (unit @ unit.t())[first, second])     # each pair once
    cosine = torch.cat(pair_losses).mean() if pair_losses else zero
    return ce + cosine
