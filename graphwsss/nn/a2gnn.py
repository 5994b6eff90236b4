r"""The A²GNN propagation network, batched over images (DESIGN.md §6, eqs. 3.16–3.19).

For one image with node features :math:`X` ``[N, F]``:

.. math::
    H^1 = \operatorname{dropout}\big(\operatorname{ReLU}(X W^0)\big), \qquad
    H^{l+1} = P^l H^l \;(l = 1..L), \qquad
    O = \operatorname{softmax}\big(H^{L+1} W^{L+1}\big)

with :math:`P^l` the affinity attention of :mod:`graphwsss.nn.affinity_attention` (3.17–3.18),
no bias anywhere, hidden width 256, dropout 0.5 applied once, :math:`L = 3`.

The A²GNN is transductive: one fresh model per image. :class:`A2GNN` trains ``B`` such models
as one batched problem: every parameter has a leading image dimension (:math:`W^0`
``[B, F, 256]``, :math:`w` ``[B, L]``, :math:`W^{L+1}` ``[B, 256, K]``), the images' graphs are
disjoint, and the caller sums the per-image losses, so each image's gradient is exactly the
one it would get alone; Adam and weight decay act element-wise, so each image's trajectory is
the one it would follow alone. Randomness (initialisation and dropout masks) comes from one
``torch.Generator`` per image, drawn at the image's own size, so a batch and each image alone
give the same results.

Two graph layouts:

* **grid** (radius graphs on the node grid, what graphwsss builds): features
  ``[B, F, Hmax, Wmax]``, edge weights ``grid_weight`` ``[B, O, Hmax, Wmax]`` (zero-padded),
  ``offsets`` ``[O, 2]``; each image occupies the top-left ``h_b x w_b`` corner; node
  ``n = row * Wmax + col``;
* **edges** (any graph): features ``[B, Nmax, F]`` (image ``b``'s nodes first, then padding),
  one block-diagonal ``edge_index`` over ``B * Nmax`` nodes (node ``b * Nmax + n``) with
  ``edge_weight``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from graphwsss.graphs.grid import check_offsets
from graphwsss.nn.affinity_attention import (CsrAdjacency, check_form, edge_aggregate,
                                             edge_attention, grid_tiles, tiled_affinity_attention)


def draw_uniform(shape: Sequence[int], low: float, high: float,
             generator: Optional[torch.Generator]) -> Tensor:
    """``U(low, high)`` samples drawn on the generator's device (CPU without a generator)."""
    device = generator.device if generator is not None else None
    return torch.rand(tuple(shape), generator=generator, device=device) * (high - low) + low


class BatchedDropout:
    """Per-image dropout masks from per-image generators, drawn at each image's own size.

    Args:
        p: drop probability.
        generators: one ``torch.Generator`` per image, or ``None`` (global RNG).
    """

    def __init__(self, p: float, generators: Optional[Sequence[torch.Generator]]) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.generators = generators

    def mask(self, index: int, shape: Sequence[int], like: Tensor) -> Tensor:
        """``shape`` float mask for image ``index``: 0 (dropped) or ``1 / (1 - p)``."""
        generator = self.generators[index] if self.generators is not None else None
        device = generator.device if generator is not None else like.device
        keep = torch.rand(tuple(shape), generator=generator, device=device) >= self.p
        return keep.to(device=like.device, dtype=like.dtype) / (1.0 - self.p)

    def grid(self, h: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
        """``h`` ``[B, Hmax, Wmax, C]`` times masks drawn ``[h_b, w_b, C]`` in the top-left corners."""
        if self.p == 0.0:
            return h
        masks = torch.zeros_like(h)
        for index, (height, width) in enumerate(sizes):
            masks[index, :height, :width] = self.mask(index, (height, width, h.shape[-1]), h)
        return h * masks

    def nodes(self, h: Tensor, counts: Sequence[int]) -> Tensor:
        """``h`` ``[B, Nmax, C]`` times masks drawn ``[n_b, C]`` over the first ``n_b`` nodes."""
        if self.p == 0.0:
            return h
        masks = torch.zeros_like(h)
        for index, count in enumerate(counts):
            masks[index, :count] = self.mask(index, (count, h.shape[-1]), h)
        return h * masks


def grid_sizes(node_mask: Tensor) -> list[tuple[int, int]]:
    """``[(h_b, w_b)]``: rows and columns holding a node of each image. ``node_mask``: ``[B, H, W]``."""
    heights = node_mask.any(dim=2).sum(dim=1).tolist()
    widths = node_mask.any(dim=1).sum(dim=1).tolist()
    return list(zip(heights, widths))


def node_counts(node_mask: Tensor) -> list[int]:
    """``[n_b]`` for a ``[B, Nmax]`` mask whose true entries come first in each row."""
    counts = node_mask.sum(dim=1)
    first = torch.arange(node_mask.shape[1], device=node_mask.device) < counts.unsqueeze(1)
    if not torch.equal(first, node_mask):
        raise ValueError("node_mask must mark each image's nodes first, then padding")
    return counts.tolist()


def check_propagator_inputs(x: Tensor, edge_index: Optional[Tensor], edge_weight: Optional[Tensor],
                            node_mask: Optional[Tensor], grid_weight: Optional[Tensor],
                            offsets: Optional[Tensor], num_images: int, in_channels: int) -> Tensor:
    """Validate a batched propagator's inputs (see :meth:`A2GNN.forward`); return the node mask
    (``[B, H, W]`` for the grid layout, ``[B, Nmax]`` for edges)."""
    if x.ndim == 4:
        if grid_weight is None or offsets is None:
            raise ValueError("grid features [B, F, H, W] need grid_weight and offsets")
        check_offsets(offsets)
        batch, channels, height, width = x.shape
        expected = (batch, offsets.shape[0], height, width)
        if tuple(grid_weight.shape) != expected:
            raise ValueError(f"grid_weight must be [B, O, H, W] = {list(expected)}, got shape "
                             f"{tuple(grid_weight.shape)}")
        if node_mask is None:
            node_mask = (grid_weight > 0).any(dim=1)
        if tuple(node_mask.shape) != (batch, height, width):
            raise ValueError(f"node_mask must be [B, H, W] = {[batch, height, width]}, got shape "
                             f"{tuple(node_mask.shape)}")
    elif x.ndim == 3:
        if edge_index is None:
            raise ValueError("node features [B, Nmax, F] need edge_index (and edge_weight)")
        batch, num_nodes, channels = x.shape
        if node_mask is None:
            node_mask = torch.ones(batch, num_nodes, dtype=torch.bool, device=x.device)
        if tuple(node_mask.shape) != (batch, num_nodes):
            raise ValueError(f"node_mask must be [B, Nmax] = {[batch, num_nodes]}, got shape "
                             f"{tuple(node_mask.shape)}")
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got shape {tuple(edge_index.shape)}")
        if edge_weight is not None and edge_weight.shape != edge_index.shape[1:]:
            raise ValueError(f"edge_weight must be [E] = [{edge_index.shape[1]}], got shape "
                             f"{tuple(edge_weight.shape)}")
    else:
        raise ValueError(f"x must be [B, F, H, W] (grid) or [B, Nmax, F] (edges), got shape "
                         f"{tuple(x.shape)}")
    if batch != num_images:
        raise ValueError(f"the model was built for {num_images} images, got a batch of {batch}")
    if channels != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {channels}")
    return node_mask.bool()


def grid_nodes(x: Tensor) -> Tensor:
    """``[B, F, H, W]`` to ``[B, H * W, F]`` without a copy where the strides allow it."""
    batch, channels = x.shape[:2]
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    return x.reshape(batch, channels, -1).transpose(1, 2)  # bmm reads the transposed layout


def block_edges(edge_index: Tensor, edge_weight: Optional[Tensor],
                node_mask: Tensor) -> tuple[Tensor, Optional[Tensor]]:
    """Drop the edges of a block-diagonal ``edge_index`` that touch a padding node."""
    flat = node_mask.reshape(-1)
    keep = flat[edge_index[0]] & flat[edge_index[1]]
    if bool(keep.all()):
        return edge_index, edge_weight
    return edge_index[:, keep], (edge_weight[keep] if edge_weight is not None else None)


class A2GNN(nn.Module):
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
            :class:`~graphwsss.nn.affinity_attention.TiledWindow`). (default: 8)

    Shapes:
        - **input (grid):** ``x`` ``[B, F, H, W]``, ``grid_weight`` ``[B, O, H, W]``,
          ``offsets`` ``[O, 2]``, optional ``node_mask`` ``[B, H, W]``
        - **input (edges):** ``x`` ``[B, Nmax, F]``, ``edge_index`` ``[2, E]`` over
          ``B * Nmax`` nodes, ``edge_weight`` ``[E]``, optional ``node_mask`` ``[B, Nmax]``
        - **output:** ``logits`` ``[B, Nmax, K]`` (``Nmax = H * W`` for grids; zero at padding),
          ``hidden`` :math:`H^{L+1}` ``[B, Nmax, hidden]``
    """

    def __init__(self, in_channels: int, num_classes: int, num_images: int, hidden: int = 256,
                 num_layers: int = 3, dropout: float = 0.5, beta: float = 10.0,
                 form: str = "reference",
                 generators: Optional[Sequence[torch.Generator]] = None, tile: int = 8) -> None:
        super().__init__()
        check_form(form)
        if generators is not None and len(generators) != num_images:
            raise ValueError(f"need one generator per image ({num_images}), got {len(generators)}")
        self.in_channels, self.num_classes, self.num_images = in_channels, num_classes, num_images
        self.hidden, self.num_layers, self.beta, self.form = hidden, num_layers, float(beta), form
        self.generators = list(generators) if generators is not None else None
        self._structure_cache: Optional[tuple] = None
        self.dropout = BatchedDropout(dropout, self.generators)
        self.tile = tile
        self.embedding_weight = Parameter(torch.empty(num_images, in_channels, hidden))
        self.attention_weight = Parameter(torch.empty(num_images, num_layers))
        self.output_weight = Parameter(torch.empty(num_images, hidden, num_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        embedding_bound = 1.0 / math.sqrt(self.in_channels)
        output_bound = 1.0 / math.sqrt(self.hidden)
        for index in range(self.num_images):
            generator = self.generators[index] if self.generators is not None else None
            self.embedding_weight[index] = draw_uniform(self.embedding_weight.shape[1:],
                                                    -embedding_bound, embedding_bound, generator)
            self.attention_weight[index] = draw_uniform((self.num_layers,), 0.0, 1.0, generator)
            self.output_weight[index] = draw_uniform(self.output_weight.shape[1:],
                                                 -output_bound, output_bound, generator)

    def forward(self, x: Tensor, edge_index: Optional[Tensor] = None,
                edge_weight: Optional[Tensor] = None, node_mask: Optional[Tensor] = None, *,
                grid_weight: Optional[Tensor] = None,
                offsets: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Logits ``[B, Nmax, K]`` and last hidden features ``[B, Nmax, hidden]``; see the class."""
        node_mask = check_propagator_inputs(x, edge_index, edge_weight, node_mask, grid_weight,
                                            offsets, self.num_images, self.in_channels)
        batch = x.shape[0]
        flat_mask = node_mask.reshape(batch, -1, 1).to(x.dtype)
        h = F.relu(torch.bmm(grid_nodes(x) if x.ndim == 4 else x, self.embedding_weight))
        h = h * flat_mask  # padding may hold anything; its embedding must be zero
        if x.ndim == 4:
            height, width = x.shape[-2:]
            h = h.view(batch, height, width, self.hidden)
            if self.training:
                h = self.dropout.grid(h, grid_sizes(node_mask))
            tiles = self._graph_structure(
                (grid_weight, offsets, node_mask),
                lambda: grid_tiles(grid_weight, offsets.to(x.device), node_mask, self.tile))
            for layer in range(self.num_layers):
                h = tiled_affinity_attention(h, tiles, self.attention_weight[:, layer], self.beta,
                                             self.form)
            h = h.reshape(batch, height * width, self.hidden)
        else:
            num_nodes = x.shape[1]
            if self.training:
                h = self.dropout.nodes(h, node_counts(node_mask))
            adjacency = self._graph_structure(
                (edge_index, edge_weight, node_mask),
                lambda: CsrAdjacency.from_edge_index(*block_edges(edge_index, edge_weight, node_mask),
                                                     batch * num_nodes))
            h = h.reshape(batch * num_nodes, self.hidden)
            for layer in range(self.num_layers):
                w = self.attention_weight[:, layer].repeat_interleave(num_nodes)
                h = edge_aggregate(edge_attention(h, adjacency, w, self.beta, self.form), h,
                                   adjacency)
            h = h.reshape(batch, num_nodes, self.hidden)
        return torch.bmm(h, self.output_weight), h

    def _graph_structure(self, graph: tuple, build):
        """What depends on the graph only (CSR order, window tiles), built once per graph.

        Transductive training calls ``forward`` hundreds of times on the same graph tensors;
        they are recognised by identity (the cache holds them, so they cannot be recycled).
        """
        cached = self._structure_cache
        if cached is None or len(cached[0]) != len(graph) or any(
                a is not b for a, b in zip(cached[0], graph)):
            cached = self._structure_cache = (graph, build())
        return cached[1]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.num_classes}, num_images={self.num_images}, "
                f"hidden={self.hidden}, num_layers={self.num_layers}, dropout={self.dropout.p}, "
                f"beta={self.beta}, form={self.form!r}")
