r"""The A²GNN propagation network, batched over images (docs/method.md §6, eqs. 3.16–3.19).

For one image with node features :math:`X` ``[N, F]``:

.. math::
    H^1 = \operatorname{dropout}\big(\operatorname{ReLU}(X W^0)\big), \qquad
    H^{l+1} = P^l H^l \;(l = 1..L), \qquad
    O = \operatorname{softmax}\big(H^{L+1} W^{L+1}\big)

with :math:`P^l` the affinity attention of :mod:`graphwsss.nn.affinity_attention` (3.17–3.18),
no bias anywhere, hidden width 256, dropout 0.5 applied once, :math:`L = 3`.

The A²GNN is transductive: one fresh model per image. :class:`A2GNN` trains ``B`` such models
as one batched problem (:mod:`graphwsss.nn.batched`): every parameter has a leading image
dimension (:math:`W^0` ``[B, F, 256]``, :math:`w` ``[B, L]``, :math:`W^{L+1}` ``[B, 256, K]``),
the images' graphs are disjoint, and the caller sums the per-image losses.

Both input layouts of :mod:`graphwsss.nn.batched`: the **grid** layout (radius graphs on the
node grid) runs the tiled window form of the layer
(:func:`~graphwsss.nn.tiled_attention.tiled_affinity_attention`), the **edges** layout (any
graph) the CSR form (:func:`~graphwsss.nn.affinity_attention.edge_attention`); same math.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.nn import Parameter

from graphwsss.nn.affinity_attention import check_form, edge_attention
from graphwsss.nn.csr import edge_aggregate
from graphwsss.nn.tiled_attention import grid_tiles, tiled_affinity_attention
from graphwsss.nn.batched import BatchedPropagator, draw_uniform


class A2GNN(BatchedPropagator):
    r"""The A²GNN (3.16–3.19) for ``num_images`` images trained as one batched problem.

    .. math::
        H^1 = \operatorname{dropout}(\operatorname{ReLU}(X W^0)),\quad
        H^{l+1} = P^l H^l,\quad
        O = \operatorname{softmax}(H^{L+1} W^{L+1})

    Per image: :math:`W^0 \sim \mathcal{U}(\pm 1/\sqrt{F})` (``[F, hidden]``),
    :math:`w^l \sim \mathcal{U}(0, 1)` (``[L]``), :math:`W^{L+1} \sim \mathcal{U}(\pm
    1/\sqrt{hidden})` (``[hidden, K]``), drawn in this order from the image's generator.

    Args:
        in_channels: node feature size ``F``.
        num_classes: ``K`` (background included).
        num_images: ``B``, the number of independent per-image models.
        hidden: hidden width. (default: 256)
        num_layers: ``L`` affinity attention layers. (default: 3)
        dropout: drop probability after the embedding. (default: 0.5)
        beta: weight of the edge term. (default: 10)
        form: ``"reference"`` or ``"paper"`` (see :mod:`graphwsss.nn.affinity_attention`).
        generators: one ``torch.Generator`` per image (seeded by the caller) for initialisation
            and dropout, or ``None`` for the global RNG (then a batch and single images differ).
        tile: tile side of the grid layout (a speed setting, see
            :class:`~graphwsss.nn.tiled_attention.TiledWindow`). (default: 8)

    Shapes: as :class:`~graphwsss.nn.batched.BatchedPropagator`.
    """

    def __init__(self, in_channels: int, num_classes: int, num_images: int, hidden: int = 256,
                 num_layers: int = 3, dropout: float = 0.5, beta: float = 10.0,
                 form: str = "reference",
                 generators: Optional[Sequence[torch.Generator]] = None, tile: int = 8) -> None:
        super().__init__(in_channels, num_classes, num_images, hidden, dropout, generators)
        check_form(form)
        self.num_layers, self.beta, self.form, self.tile = num_layers, float(beta), form, tile
        self.attention_weight = Parameter(torch.empty(num_images, num_layers))
        self.reset_parameters()

    def reset_image(self, index: int, generator: Optional[torch.Generator]) -> None:
        self.draw_embedding(index, generator)
        self.attention_weight[index] = draw_uniform((self.num_layers,), 0.0, 1.0, generator)
        self.draw_output(index, generator)

    def propagate(self, h: Tensor, graph: dict) -> Tensor:
        batch, num_nodes = h.shape[:2]
        grid_weight, offsets, node_mask = graph["grid_weight"], graph["offsets"], graph["node_mask"]
        if grid_weight is not None:
            height, width = grid_weight.shape[-2:]
            tiles = self.cached(graph["key"], lambda: grid_tiles(
                grid_weight, offsets.to(h.device), node_mask, self.tile))
            h = h.view(batch, height, width, self.hidden)
            for layer in range(self.num_layers):
                h = tiled_affinity_attention(h, tiles, self.attention_weight[:, layer], self.beta,
                                             self.form)
            return h.reshape(batch, num_nodes, self.hidden)
        adjacency = self.adjacency(graph, batch * num_nodes)
        h = h.reshape(batch * num_nodes, self.hidden)
        for layer in range(self.num_layers):
            w = self.attention_weight[:, layer].repeat_interleave(num_nodes)
            h = edge_aggregate(edge_attention(h, adjacency, w, self.beta, self.form), h, adjacency)
        return h.reshape(batch, num_nodes, self.hidden)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.num_classes}, num_images={self.num_images}, "
                f"hidden={self.hidden}, num_layers={self.num_layers}, dropout={self.dropout.p}, "
                f"beta={self.beta}, form={self.form!r}")
