r"""Consistency checking of box seeds (docs/method.md §6, eqs. 3.27–3.28).

For a box :math:`B` of class :math:`c` with selected nodes :math:`\mathcal{K}_B`
(:func:`~graphwsss.losses.multi_point.select_multi_points`), the prototype is the mean last
hidden feature of the selected nodes (eq. 3.27),

.. math::
    P_B = \frac{1}{|\mathcal{K}_B|} \sum_{j \in \mathcal{K}_B} H_j ,

and every seed of class :math:`c` inside :math:`B` whose feature disagrees with it becomes
unlabeled (eq. 3.28):

.. math::
    y_i \leftarrow 255 \quad \text{if } i \in B,\ y_i = c,\ \cos(H_i, P_B) \le 0 .

The caller keeps the returned seeds, so removals persist across epochs. A zero feature vector
has cosine 0 and is removed.

Because :math:`H^{L+1} \ge 0` for the A²GNN (ReLU embedding, row-stochastic attention), every
cosine is :math:`\ge 0` and (3.28) cannot fire. ``rule="background"`` compares with the
background instead: a class-:math:`c` seed in :math:`B` is unlabeled when it is at least as close
to the background prototype :math:`P_0` (the mean :math:`H` of the image's background seeds) as
to its box's,

.. math::
    y_i \leftarrow 255 \quad \text{if } i \in B,\ y_i = c,\
    \cos(H_i, P_B) \le \cos(H_i, P_0) .
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from graphwsss.data.records import IGNORE_INDEX
from graphwsss.losses.multi_point import check_grid_boxes

__all__ = ["consistency_check"]


@torch.no_grad()
def consistency_check(hidden: Tensor, seeds: Tensor, boxes: Tensor, box_classes: Tensor,
                      selected: list[Tensor], ignore_index: int = IGNORE_INDEX,
                      rule: str = "reference") -> Tensor:
    r"""Unlabel the seeds of each box that point away from the box prototype (eqs. 3.27–3.28).

    Args:
        hidden: ``[C, h, w]`` last hidden features :math:`H^{L+1}`.
        seeds: ``[h, w]`` integer seed labels (``ignore_index`` = unlabeled).
        boxes: ``LongTensor[M, 4]`` half-open ``(x0, y0, x1, y1)`` grid cells.
        box_classes: ``LongTensor[M]`` class of each box.
        selected: ``M`` tensors of flat node indices ``row * w + col`` per box, from
            :func:`~graphwsss.losses.multi_point.select_multi_points`.
        ignore_index: the label given to removed seeds (default 255).
        rule: ``"reference"`` (3.28: cosine to the box prototype ``<= 0``) or ``"background"``
            (cosine to the box prototype ``<=`` cosine to the background prototype; an image
            without background seeds keeps every seed).

    Returns:
        New seeds ``[h, w]``, same dtype and device as ``seeds`` (the input is not modified).
        Seeds outside every box, of other classes, or of boxes without selected nodes are kept.
    """
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        raise ValueError("hidden must be a [C, h, w] tensor")
    if not isinstance(seeds, Tensor) or seeds.dtype.is_floating_point \
            or tuple(seeds.shape) != tuple(hidden.shape[1:]):
        raise ValueError(f"seeds must be an integer tensor of shape {tuple(hidden.shape[1:])}")
    if len(selected) != boxes.shape[0]:
        raise ValueError(f"selected has {len(selected)} entries for {boxes.shape[0]} boxes")
    channels, height, width = hidden.shape
    # Class ids of seeds may exceed any box class; only the grid bounds matter here.
    checked = check_grid_boxes(boxes, box_classes, IGNORE_INDEX + 1, height, width)

    if rule not in ("reference", "background"):
        raise ValueError(f"rule must be 'reference' or 'background', got {rule!r}")
    flat_hidden = hidden.reshape(channels, -1)
    new_seeds = seeds.clone()
    background = None
    if rule == "background":
        is_background = (seeds == 0).reshape(-1).to(hidden.device)
        if not bool(is_background.any()):
            return new_seeds
        background = F.normalize(flat_hidden[:, is_background].mean(dim=1), dim=0)
    for (x0, y0, x1, y1, cls), box_nodes in zip(checked, selected):
        if box_nodes.numel() == 0:
            continue
        prototype = flat_hidden[:, box_nodes.to(hidden.device)].mean(dim=1)     # [C]  (3.27)
        inside = F.normalize(hidden[:, y0:y1, x0:x1], dim=0)                    # [C, bh, bw]
        cosine = torch.einsum("chw,c->hw", inside, F.normalize(prototype, dim=0))
        threshold = 0 if background is None else torch.einsum("chw,c->hw", inside, background)
        box_seeds = new_seeds[y0:y1, x0:x1]                                     # a view
        removed = (cosine <= threshold).to(seeds.device)
        box_seeds[(box_seeds == cls) & removed] = ignore_index                  # (3.28)
    return new_seeds
