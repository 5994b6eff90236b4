r"""Many images' transductive propagators trained as one batched problem (docs/method.md §6).

The A²GNN and its baselines are transductive: one fresh model per image. A batched propagator
holds ``B`` such models at once: every parameter has a leading image dimension (e.g. the
embedding :math:`W^0` ``[B, F, hidden]``), the images' graphs are disjoint, and the caller sums
the per-image losses, so each image's gradient is exactly the one it would get alone; Adam and
weight decay act element-wise, so each image's trajectory is the one it would follow alone.
Randomness (initialisation and dropout masks) comes from one ``torch.Generator`` per image,
drawn at the image's own size, so a batch and each image alone give the same results.

Two input layouts, shared by every propagator (:func:`check_propagator_inputs`):

* **grid** (radius graphs on the node grid, docs/method.md §5): features ``[B, F, Hmax, Wmax]``,
  edge weights ``grid_weight`` ``[B, O, Hmax, Wmax]`` (zero-padded), ``offsets`` ``[O, 2]``;
  image ``b`` occupies the top-left ``h_b x w_b`` corner; node ``n = row * Wmax + col``;
* **edges** (any graph): features ``[B, Nmax, F]`` (image ``b``'s ``n_b`` nodes first, then
  padding), one block-diagonal ``edge_index`` over ``B * Nmax`` nodes (node ``b * Nmax + n``)
  with ``edge_weight``, and ``node_mask`` ``[B, Nmax]``.

Outputs are ``[B, Nmax, C]`` (``Nmax = Hmax * Wmax`` for grids), zero at padding.

:class:`BatchedPropagator` is the common frame: per-image initialisation, the embedding
:math:`H^1 = \operatorname{dropout}(\operatorname{ReLU}(X W^0))`, the output layer
:math:`H^{L+1} W^{L+1}` (no biases), and a cache of the graph structure, which transductive
training reuses for hundreds of epochs. Subclasses implement the propagation in between.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from graphwsss.graphs.grid import check_offsets, grid_to_edges
from graphwsss.nn.csr import CsrAdjacency
from graphwsss.utils.shapes import check_shape, describe


def draw_uniform(shape: Sequence[int], low: float, high: float,
                 generator: Optional[torch.Generator]) -> Tensor:
    """``U(low, high)`` samples drawn on the generator's device (CPU without a generator)."""
    device = generator.device if generator is not None else None
    return torch.rand(tuple(shape), generator=generator, device=device) * (high - low) + low


def draw_glorot(shape: Sequence[int], generator: Optional[torch.Generator]) -> Tensor:
    """Glorot-uniform samples over the last two dimensions, as PyG's ``glorot`` initialiser:
    :math:`\\mathcal{U}(\\pm\\sqrt{6 / (\\text{shape}[-2] + \\text{shape}[-1])})`."""
    bound = math.sqrt(6.0 / (shape[-2] + shape[-1]))
    return draw_uniform(shape, -bound, bound, generator)


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

    def draw(self, index: int, shape: Sequence[int], device: torch.device) -> Tensor:
        """``U(0, 1)`` samples ``shape`` for image ``index`` from its generator, on ``device``."""
        generator = self.generators[index] if self.generators is not None else None
        source = generator.device if generator is not None else device
        return torch.rand(tuple(shape), generator=generator, device=source).to(device)

    def scale(self, uniform: Tensor, dtype: torch.dtype) -> Tensor:
        """Samples to the mask: 0 where dropped (``< p``), else ``1 / (1 - p)``."""
        return (uniform >= self.p).to(dtype) / (1.0 - self.p)

    def grid(self, h: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
        """``h`` ``[B, Hmax, Wmax, C]`` times masks drawn ``[h_b, w_b, C]`` in the top-left corners
        (``h`` must be zero outside them)."""
        if self.p == 0.0:
            return h
        # Only the draws are per image; the mask is made in one pass (padding: any mask, h = 0).
        uniform = torch.ones_like(h)
        for index, (height, width) in enumerate(sizes):
            uniform[index, :height, :width] = self.draw(index, (height, width, h.shape[-1]),
                                                        h.device)
        return h * self.scale(uniform, h.dtype)

    def nodes(self, h: Tensor, counts: Sequence[int]) -> Tensor:
        """``h`` ``[B, Nmax, C]`` times masks drawn ``[n_b, C]`` over the first ``n_b`` nodes
        (``h`` must be zero after them)."""
        if self.p == 0.0:
            return h
        uniform = torch.ones_like(h)
        for index, count in enumerate(counts):
            uniform[index, :count] = self.draw(index, (count, h.shape[-1]), h.device)
        return h * self.scale(uniform, h.dtype)


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
    """Validate a batched propagator's inputs (see :meth:`BatchedPropagator.forward`); return the
    node mask (``[B, H, W]`` for the grid layout, ``[B, Nmax]`` for edges)."""
    if x.ndim == 4:
        if grid_weight is None or offsets is None:
            raise ValueError("grid features [B, F, H, W] need grid_weight and offsets")
        check_offsets(offsets)
        batch, channels, height, width = x.shape
        expected = (batch, offsets.shape[0], height, width)
        check_shape("grid_weight", grid_weight, f"[B, O, H, W] = {list(expected)}", shape=expected)
        if node_mask is None:
            node_mask = (grid_weight > 0).any(dim=1)
        check_shape("node_mask", node_mask, f"[B, H, W] = {[batch, height, width]}",
                    shape=(batch, height, width), what="mask")
    elif x.ndim == 3:
        if edge_index is None:
            raise ValueError("node features [B, Nmax, F] need edge_index (and edge_weight)")
        batch, num_nodes, channels = x.shape
        if node_mask is None:
            node_mask = torch.ones(batch, num_nodes, dtype=torch.bool, device=x.device)
        check_shape("node_mask", node_mask, f"[B, Nmax] = {[batch, num_nodes]}",
                    shape=(batch, num_nodes), what="mask")
        check_shape("edge_index", edge_index, "[2, E]", shape=(2, None))
        if edge_weight is not None:
            check_shape("edge_weight", edge_weight, f"[E] = [{edge_index.shape[1]}]",
                        shape=(edge_index.shape[1],))
    else:
        raise ValueError(f"x must be a [B, F, H, W] (grid) or [B, Nmax, F] (edges) tensor, "
                         f"got {describe(x)}")
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


def grid_block_edges(grid_weight: Tensor, offsets: Tensor,
                     node_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The grid layout's graphs as one block-diagonal edge list over ``B * H * W`` nodes.

    Args:
        grid_weight: ``[B, O, H, W]``; offsets: ``[O, 2]``; node_mask: ``[B, H, W]``.

    Returns:
        ``edge_index`` ``[2, E]`` (node ``b * H * W + row * W + col``) and ``edge_weight``
        ``[E]``, without edges touching padding.
    """
    batch, _, height, width = grid_weight.shape
    edges, weights = [], []
    for index in range(batch):  # once per batch of graphs (cached by the propagators)
        image_edges, image_weight = grid_to_edges(grid_weight[index], offsets)
        edges.append(image_edges + index * height * width)
        weights.append(image_weight)
    edge_index, edge_weight = block_edges(torch.cat(edges, 1), torch.cat(weights), node_mask)
    return edge_index, edge_weight


class BatchedPropagator(nn.Module):
    r"""The frame of a batched propagator: ``num_images`` independent per-image models.

    .. math::
        H^1 = \operatorname{dropout}(\operatorname{ReLU}(X W^0)), \quad
        H^{L+1} = \text{propagate}(H^1), \quad
        \text{logits} = H^{L+1} W^{L+1}

    with :math:`W^0` ``[B, F, hidden]`` and :math:`W^{L+1}` ``[B, hidden, K]``, both
    :math:`\mathcal{U}(\pm 1/\sqrt{\text{fan-in}})` and without bias. Subclasses create their
    own parameters, draw one image's values in :meth:`reset_image` (``W^0`` first, ``W^{L+1}``
    last) and implement :meth:`propagate`.

    Args:
        in_channels: node feature size ``F``.
        num_classes: ``K`` (background included).
        num_images: ``B``.
        hidden: hidden width.
        dropout: drop probability after the embedding.
        generators: one ``torch.Generator`` per image (seeded by the caller) for initialisation
            and dropout, or ``None`` for the global RNG (then a batch and single images differ).

    Shapes:
        - **input (grid):** ``x`` ``[B, F, H, W]``, ``grid_weight`` ``[B, O, H, W]``,
          ``offsets`` ``[O, 2]``, optional ``node_mask`` ``[B, H, W]``
        - **input (edges):** ``x`` ``[B, Nmax, F]``, ``edge_index`` ``[2, E]`` over
          ``B * Nmax`` nodes, ``edge_weight`` ``[E]``, optional ``node_mask`` ``[B, Nmax]``
        - **output:** ``logits`` ``[B, Nmax, K]`` (``Nmax = H * W`` for grids; zero at
          padding), ``hidden`` :math:`H^{L+1}` ``[B, Nmax, hidden]``
    """

    def __init__(self, in_channels: int, num_classes: int, num_images: int, hidden: int,
                 dropout: float, generators: Optional[Sequence[torch.Generator]]) -> None:
        super().__init__()
        if generators is not None and len(generators) != num_images:
            raise ValueError(f"need one generator per image ({num_images}), got {len(generators)}")
        self.in_channels, self.num_classes, self.num_images = in_channels, num_classes, num_images
        self.hidden = hidden
        self.generators = list(generators) if generators is not None else None
        self.dropout = BatchedDropout(dropout, self.generators)
        self._structure_cache: Optional[tuple] = None
        self.embedding_weight = Parameter(torch.empty(num_images, in_channels, hidden))
        self.output_weight = Parameter(torch.empty(num_images, hidden, num_classes))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for index in range(self.num_images):
            self.reset_image(index, self.generators[index] if self.generators is not None else None)

    def reset_image(self, index: int, generator: Optional[torch.Generator]) -> None:
        """Draw image ``index``'s parameters from ``generator``. Subclasses draw their own
        between :meth:`draw_embedding` and :meth:`draw_output`."""
        self.draw_embedding(index, generator)
        self.draw_output(index, generator)

    def draw_embedding(self, index: int, generator: Optional[torch.Generator]) -> None:
        bound = 1.0 / math.sqrt(self.in_channels)
        self.embedding_weight[index] = draw_uniform(self.embedding_weight.shape[1:], -bound,
                                                    bound, generator)

    def draw_output(self, index: int, generator: Optional[torch.Generator]) -> None:
        bound = 1.0 / math.sqrt(self.hidden)
        self.output_weight[index] = draw_uniform(self.output_weight.shape[1:], -bound, bound,
                                                 generator)

    def forward(self, x: Tensor, edge_index: Optional[Tensor] = None,
                edge_weight: Optional[Tensor] = None, node_mask: Optional[Tensor] = None, *,
                grid_weight: Optional[Tensor] = None,
                offsets: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Logits ``[B, Nmax, K]`` and last hidden features ``[B, Nmax, hidden]``; see the class."""
        given_mask = node_mask
        node_mask = check_propagator_inputs(x, edge_index, edge_weight, node_mask, grid_weight,
                                            offsets, self.num_images, self.in_channels)
        # The arguments as given identify the graph for the structure cache.
        graph = dict(edge_index=edge_index, edge_weight=edge_weight, node_mask=node_mask,
                     grid_weight=grid_weight, offsets=offsets,
                     key=(edge_index, edge_weight, given_mask, grid_weight, offsets))
        h = self.propagate(self.embed(x, node_mask), graph)
        return torch.bmm(h, self.output_weight), h

    def embed(self, x: Tensor, node_mask: Tensor) -> Tensor:
        """:math:`H^1` ``[B, Nmax, hidden]``: zero at padding, dropout in training."""
        batch = x.shape[0]
        h = F.relu(torch.bmm(grid_nodes(x) if x.ndim == 4 else x, self.embedding_weight))
        h = h * node_mask.reshape(batch, -1, 1).to(h.dtype)  # padding may hold anything
        if not self.training:
            return h
        if x.ndim == 4:
            height, width = x.shape[-2:]
            masked = self.dropout.grid(h.view(batch, height, width, self.hidden),
                                       grid_sizes(node_mask))
            return masked.view(batch, height * width, self.hidden)
        return self.dropout.nodes(h, node_counts(node_mask))

    def propagate(self, h: Tensor, graph: dict) -> Tensor:
        """:math:`H^1` ``[B, Nmax, hidden]`` to :math:`H^{L+1}`; ``graph`` holds the forward
        arguments (``edge_index``, ``edge_weight``, ``node_mask``, ``grid_weight``,
        ``offsets``) and ``key``, the arguments as given, for :meth:`cached`. The identity here
        (no propagation)."""
        return h

    def adjacency(self, graph: dict, num_nodes: int,
                  build: Optional[Callable[[Tensor, Tensor, int], CsrAdjacency]] = None,
                  ) -> CsrAdjacency:
        """The batch's block-diagonal graph over ``B * Nmax`` nodes as a :class:`CsrAdjacency`
        (cached), made by ``build(edge_index, edge_weight, num_nodes)``; by default
        :meth:`CsrAdjacency.from_edge_index` (self loops of weight 1 added where missing).
        Grid inputs are converted to edges (node ``b * H * W + row * W + col``); edges touching
        padding are dropped; a missing ``edge_weight`` means 1."""
        build = build or CsrAdjacency.from_edge_index

        def make() -> CsrAdjacency:
            if graph["grid_weight"] is not None:
                edge_index, edge_weight = grid_block_edges(
                    graph["grid_weight"], graph["offsets"].to(graph["grid_weight"].device),
                    graph["node_mask"])
            else:
                edge_index, edge_weight = block_edges(graph["edge_index"], graph["edge_weight"],
                                                      graph["node_mask"])
                if edge_weight is None:
                    edge_weight = torch.ones(edge_index.shape[1], device=edge_index.device)
            return build(edge_index, edge_weight, num_nodes)

        return self.cached(graph["key"], make)

    def cached(self, graph: tuple, build: Callable[[], object]):
        """What depends on the graph only (CSR order, window tiles), built once per graph.

        Transductive training calls ``forward`` hundreds of times on the same graph tensors;
        they are recognised by identity (the cache holds them, so they cannot be recycled).
        """
        cached = self._structure_cache
        if cached is None or len(cached[0]) != len(graph) or any(
                a is not b for a, b in zip(cached[0], graph)):
            cached = self._structure_cache = (graph, build())
        return cached[1]
