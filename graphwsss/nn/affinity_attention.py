r"""The affinity attention layer of the A²GNN (docs/method.md §6, eqs. 3.17–3.18).

One layer propagates node features with a row-stochastic matrix built from the features
themselves and the graph's edge weights, and has a single learnable scalar :math:`w^l`:

.. math::
    H^{l+1} = P^l H^l, \qquad
    P^l_{ij} = \operatorname{softmax}_{j \in S(i)}\big(
        w^l \cos(H^l_i, H^l_j) + \beta\,[\cos(H^l_i, H^l_j) > 0]\,E_{ij}\big)

over the neighbours :math:`S(i)` of node ``i`` (its in-edges, self loop included). Two forms:

* ``"reference"`` (default, the published code): edges with :math:`\cos \le 0` are removed
  from the softmax;
* ``"paper"``: every edge stays in the softmax; the edge term is on only where :math:`\cos > 0`.

A node none of whose edges survive (e.g. an all-zero feature row under ``"reference"``)
receives zero.

Two implementations share :func:`attention_logits` and give the same values and gradients:

* :class:`AffinityAttentionConv` (any graph, PyG ``MessagePassing``): edges sorted by target into
  a CSR matrix (:class:`CsrAdjacency`); the cosines are a sampled dense-dense product
  (``torch.sparse.sampled_addmm``) and the aggregation a sparse-dense product
  (``torch.sparse.mm``), so no ``[E, C]`` tensor is ever built; the softmax runs on ``[E]``
  scalars.
* :func:`grid_affinity_attention` (radius graphs on a node grid, docs/method.md §5, in the grid form
  of :mod:`graphwsss.graphs.grid`), what the A²GNN runs: the grid is cut into ``T x T`` tiles
  and each tile attends to the block of nodes around it (:class:`TiledWindow`), so cosines and
  aggregation are batched dense matrix products over tiles, masked to the window. A custom
  autograd function keeps only ``h``, ``P`` and the cosines for the backward pass (no copy of
  the features per offset or per tile) and recomputes the tiles there.

Speed notes (2-core CPU, VOC-size graph of 63 x 47 nodes, 256 channels, 81-offset window, one
layer forward + backward): a loop of shifted views (one memory-bound pass per offset and per
pass, ~6 passes of 81 offsets) took ~170-220 ms, the tiled matrix products ~55-75 ms, the CSR
path ~140 ms; dense ``N x N`` matrices several times more, and ``O(N²)`` memory.
"""

from __future__ import annotations

import warnings
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import add_remaining_self_loops

from graphwsss.graphs.grid import check_offsets

Form = Literal["reference", "paper"]
FORMS = ("reference", "paper")


def check_form(form: str) -> None:
    """Raise ``ValueError`` unless ``form`` is one of :data:`FORMS`."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")


# --------------------------------------------------------------------------------------------
# The rule itself (3.17-3.18), on any layout of per-edge scalars.
# --------------------------------------------------------------------------------------------

def attention_logits(cos: Tensor, edge_term: Tensor, w: Tensor, form: str,
                     present: Optional[Tensor] = None) -> Tensor:
    r"""Per-edge attention logits (3.18), :math:`-\infty` where the edge takes no part in the
    softmax.

    .. math::
        \ell_{ij} = w \cos_{ij} + [\cos_{ij} > 0]\,\beta E_{ij}

    Under ``form="reference"`` edges with :math:`\cos_{ij} \le 0` are dropped
    (:math:`\ell_{ij} = -\infty`); under ``"paper"`` they stay, without the edge term. Edges
    that do not exist (``present`` false) are dropped under both forms.

    Args:
        cos: per-edge cosines, any shape.
        edge_term: :math:`\beta E_{ij}`, broadcastable to ``cos`` (graph-only, so callers
            running many layers compute it once).
        w: the layer's scalar, broadcastable to ``cos`` (one value per image or per edge).
        form: ``"reference"`` or ``"paper"``.
        present: bool mask of the edges that exist (broadcastable), or ``None`` for all.

    Returns:
        The logits, shaped like ``cos``.
    """
    positive = cos > 0
    if form == "reference":
        keep = positive if present is None else positive & present
        return torch.where(keep, torch.addcmul(edge_term, w, cos), float("-inf"))
    logits = torch.addcmul(torch.where(positive, edge_term, 0.0), w, cos)
    return logits if present is None else logits.masked_fill(~present, float("-inf"))


def masked_softmax(logits: Tensor, dim: int) -> Tensor:
    r"""Softmax of ``logits`` along ``dim`` over its finite entries (:math:`-\infty` marks a
    dropped edge); zero where every entry is dropped."""
    # A row of -inf only gives NaN (0 / 0): those rows take no part and receive zero.
    return torch.softmax(logits, dim=dim).nan_to_num_(nan=0.0)


def segment_masked_softmax(logits: Tensor, target: Tensor, num_nodes: int) -> Tensor:
    r""":func:`masked_softmax` over groups of edges sharing a ``target`` node, for every trailing
    column (e.g. attention heads) separately. The softmax of all graph attention layers here.

    Args:
        logits: ``[E]`` or ``[E, H]``; :math:`-\infty` drops an edge.
        target: ``[E]`` target node of each edge.
        num_nodes: ``N``.

    Returns:
        like ``logits``; each target's finite entries' weights sum to 1 (all 0 if it has none).
    """
    index = target.view(-1, *([1] * (logits.ndim - 1))).expand_as(logits)
    groups = (num_nodes, *logits.shape[1:])
    # The maximum only stabilises exp (softmax is shift invariant): no gradient through it.
    top = logits.new_full(groups, float("-inf")).scatter_reduce(
        0, index, logits.detach(), reduce="amax", include_self=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # index_select, not [target]: its backward is an index_add, far faster than index_put.
    scores = torch.exp(logits - top.index_select(0, target))
    total = scores.new_zeros(groups).index_add(0, target, scores)
    return scores / total.clamp_min(torch.finfo(scores.dtype).tiny).index_select(0, target)


# --------------------------------------------------------------------------------------------
# General graphs: CSR sparse products.
# --------------------------------------------------------------------------------------------

class CsrAdjacency:
    r"""A graph's edges sorted by target: the CSR matrix :math:`A_{ij}` (row = target ``i``,
    column = source ``j``), i.e. PyG's transposed adjacency ``adj_t``.

    Build it once per graph with :meth:`from_edge_index` and reuse it across layers; every
    per-edge tensor of the layer lives in this sorted order.

    Attributes:
        num_nodes: ``N``.
        crow: ``[N + 1]`` row pointers.
        source: ``[E]`` column (source ``j``) of each sorted edge.
        target: ``[E]`` row (target ``i``) of each sorted edge.
        edge_weight: ``[E]`` sorted edge weights.
        order: ``[E]`` position of each sorted edge in the input edge list (``-1``: added self loop).
    """

    def __init__(self, crow: Tensor, source: Tensor, target: Tensor, edge_weight: Tensor,
                 order: Tensor, num_nodes: int) -> None:
        self.crow, self.source, self.target = crow, source, target
        self.edge_weight, self.order, self.num_nodes = edge_weight, order, int(num_nodes)
        self._transpose: Optional[tuple[Tensor, Tensor, Tensor]] = None

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, edge_weight: Optional[Tensor], num_nodes: int,
                        add_self_loops: bool = True, self_loop_weight: float = 1.0) -> "CsrAdjacency":
        """Sort ``edge_index`` ``[2, E]`` (row 0 source ``j``, row 1 target ``i``) by target.

        With ``add_self_loops``, every node without a self loop gets one of weight
        ``self_loop_weight`` (existing self loops keep their weight). ``edge_weight=None``
        means weight 1 everywhere.
        """
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must be [2, E], got shape {tuple(edge_index.shape)}")
        if edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be long, got {edge_index.dtype}")
        num_edges = edge_index.shape[1]
        if edge_weight is None:
            edge_weight = torch.ones(num_edges, device=edge_index.device)
        if edge_weight.shape != (num_edges,):
            raise ValueError(f"edge_weight must be [E] = [{num_edges}], got shape "
                             f"{tuple(edge_weight.shape)}")
        order = torch.arange(num_edges, device=edge_index.device)
        if add_self_loops:
            # The attribute rides along so that the caller can map sorted edges back.
            attributes = torch.stack([edge_weight.to(torch.float64), order.to(torch.float64)], 1)
            edge_index, attributes = add_remaining_self_loops(
                edge_index, attributes, fill_value=torch.tensor([self_loop_weight, -1.0],
                                                                dtype=torch.float64,
                                                                device=edge_index.device),
                num_nodes=num_nodes)
            edge_weight = attributes[:, 0].to(edge_weight.dtype)
            order = attributes[:, 1].long()
        source, target = edge_index[0], edge_index[1]
        permutation = torch.argsort(target * num_nodes + source)
        source, target = source[permutation], target[permutation]
        crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        crow[1:] = torch.cumsum(torch.bincount(target, minlength=num_nodes), 0)
        return cls(crow, source, target, edge_weight[permutation], order[permutation], num_nodes)

    @property
    def num_edges(self) -> int:
        return self.source.numel()

    def matrix(self, values: Tensor) -> Tensor:
        """The ``[N, N]`` sparse CSR matrix with ``values`` ``[E]`` at the sorted edges."""
        return _csr(self.crow, self.source, values, self.num_nodes)

    def transpose_matrix(self, values: Tensor) -> Tensor:
        """The transpose of :meth:`matrix` ``(values)`` as a CSR matrix."""
        if self._transpose is None:
            permutation = torch.argsort(self.source * self.num_nodes + self.target)
            crow = torch.zeros_like(self.crow)
            crow[1:] = torch.cumsum(torch.bincount(self.source, minlength=self.num_nodes), 0)
            self._transpose = (crow, self.target[permutation], permutation)
        crow, column, permutation = self._transpose
        return _csr(crow, column, values.index_select(0, permutation), self.num_nodes)


def _csr(crow: Tensor, column: Tensor, values: Tensor, num_nodes: int) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, column, values, (num_nodes, num_nodes),
                                       check_invariants=False)


def _sampled_dot(adjacency: CsrAdjacency, a: Tensor, b: Tensor) -> Tensor:
    """``[E]``: :math:`\\langle a_i, b_j \\rangle` at every sorted edge ``(j -> i)``."""
    pattern = adjacency.matrix(a.new_zeros(adjacency.num_edges))
    return torch.sparse.sampled_addmm(pattern, a.contiguous(), b.t(), beta=0.0).values()


class _EdgeSelfDot(torch.autograd.Function):
    """:math:`\\langle x_i, x_j \\rangle` per edge; backward :math:`G x + G^\\top x` (sparse)."""

    @staticmethod
    def forward(ctx, x: Tensor, adjacency: CsrAdjacency) -> Tensor:
        ctx.save_for_backward(x)
        ctx.adjacency = adjacency
        return _sampled_dot(adjacency, x, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        adjacency: CsrAdjacency = ctx.adjacency
        grad = grad.contiguous()
        grad_x = torch.sparse.mm(adjacency.matrix(grad), x)
        grad_x = grad_x + torch.sparse.mm(adjacency.transpose_matrix(grad), x)
        return grad_x, None


class _EdgeAggregate(torch.autograd.Function):
    """:math:`\\sum_j p_{ij} h_j` as ``P @ h``; backward ``P^T g`` and the sampled ``g h^T``."""

    @staticmethod
    def forward(ctx, p: Tensor, h: Tensor, adjacency: CsrAdjacency) -> Tensor:
        ctx.save_for_backward(p, h)
        ctx.adjacency = adjacency
        return torch.sparse.mm(adjacency.matrix(p), h.contiguous())

    @staticmethod
    def backward(ctx, grad: Tensor):
        p, h = ctx.saved_tensors
        adjacency: CsrAdjacency = ctx.adjacency
        grad = grad.contiguous()
        grad_p = _sampled_dot(adjacency, grad, h) if ctx.needs_input_grad[0] else None
        grad_h = (torch.sparse.mm(adjacency.transpose_matrix(p), grad)
                  if ctx.needs_input_grad[1] else None)
        return grad_p, grad_h, None


def edge_attention(x: Tensor, adjacency: CsrAdjacency, w: Tensor, beta: float = 10.0,
                   form: str = "reference") -> Tensor:
    r"""The propagation weights :math:`P_{ij}` (3.18) at the sorted edges of ``adjacency``.

    Args:
        x: ``[N, C]`` node features :math:`H^l`.
        adjacency: the graph (self loops included), see :class:`CsrAdjacency`.
        w: the layer's scalar :math:`w^l`: a 0-d/``[1]`` tensor, or ``[N]`` (one per target
            node, for many graphs batched block-diagonally).
        beta: weight of the edge term.
        form: ``"reference"`` or ``"paper"``.

    Returns:
        ``[E]`` weights; those of each target node sum to 1 (or are all 0).
    """
    check_form(form)
    if x.ndim != 2 or x.shape[0] != adjacency.num_nodes:
        raise ValueError(f"x must be [N, C] with N = {adjacency.num_nodes}, got shape "
                         f"{tuple(x.shape)}")
    w = w.reshape(-1)
    if w.numel() == x.shape[0]:
        w = w.index_select(0, adjacency.target)
    elif w.numel() != 1:
        raise ValueError(f"w must hold 1 or N = {x.shape[0]} values, got {w.numel()}")
    cos = _EdgeSelfDot.apply(F.normalize(x, dim=-1), adjacency)
    logits = attention_logits(cos, beta * adjacency.edge_weight, w, form)
    return segment_masked_softmax(logits, adjacency.target, adjacency.num_nodes)


def edge_aggregate(p: Tensor, x: Tensor, adjacency: CsrAdjacency) -> Tensor:
    r"""``[N, C]``: :math:`\sum_{j \in S(i)} p_{ij} x_j` for ``p`` ``[E]`` at the sorted edges."""
    return _EdgeAggregate.apply(p, x, adjacency)


class AffinityAttentionConv(MessagePassing):
    r"""The affinity attention layer of the A²GNN, from `"Affinity Attention Graph Neural
    Network for Weakly Supervised Semantic Segmentation" <https://arxiv.org/abs/2106.04054>`_
    (TPAMI 2021), eqs. (3.17)–(3.18) of docs/method.md §6:

    .. math::
        \mathbf{X}^{\prime} = \mathbf{P} \mathbf{X}, \qquad
        P_{i,j} = \frac{\exp\big(w \cos(\mathbf{x}_i, \mathbf{x}_j)
            + \beta\,[\cos(\mathbf{x}_i, \mathbf{x}_j) > 0]\,E_{ij}\big)}
        {\sum_{k \in S(i)} \exp\big(w \cos(\mathbf{x}_i, \mathbf{x}_k)
            + \beta\,[\cos(\mathbf{x}_i, \mathbf{x}_k) > 0]\,E_{ik}\big)}

    with one learnable scalar :math:`w` (initialised :math:`\mathcal{U}(0, 1)`), a fixed
    :math:`\beta`, and :math:`S(i)` the in-neighbours of ``i`` including ``i``. Under
    ``form="reference"`` the sums run only over neighbours with :math:`\cos > 0`.

    Args:
        beta (float, optional): weight of the edge term. (default: :obj:`10.0`)
        form (str, optional): ``"reference"`` (drop edges with :math:`\cos \le 0`, as the
            published code) or ``"paper"`` (keep them, edge term off). (default: ``"reference"``)
        requires_grad (bool, optional): if :obj:`False`, :math:`w` is a fixed buffer (still
            drawn from :math:`\mathcal{U}(0, 1)`). (default: :obj:`True`)
        add_self_loops (bool, optional): give every node without a self loop one of weight
            :obj:`1` (:math:`E_{ii} = \exp(0)`). (default: :obj:`True`)
        **kwargs (optional): additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F)`, edge indices
          :math:`(2, |\mathcal{E}|)` (row 0 source ``j``, row 1 target ``i``), edge weights
          :math:`(|\mathcal{E}|)` (or a prepared :class:`CsrAdjacency` instead of both)
        - **output:** node features :math:`(|\mathcal{V}|, F)`
    """

    def __init__(self, beta: float = 10.0, form: str = "reference", requires_grad: bool = True,
                 add_self_loops: bool = True, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(**kwargs)
        check_form(form)
        self.beta = float(beta)
        self.form = form
        self.requires_grad = requires_grad
        self.add_self_loops = add_self_loops
        if requires_grad:
            self.weight = Parameter(torch.empty(1))
        else:
            self.register_buffer("weight", torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self, generator: Optional[torch.Generator] = None):
        super().reset_parameters()
        with torch.no_grad():
            self.weight.copy_(torch.rand(1, generator=generator))

    def forward(self, x: Tensor, edge_index: Tensor | CsrAdjacency,
                edge_weight: Optional[Tensor] = None) -> Tensor:
        if isinstance(edge_index, CsrAdjacency):
            adjacency = edge_index
        else:
            adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, x.size(0),
                                                     add_self_loops=self.add_self_loops)
        alpha = edge_attention(x, adjacency, self.weight, self.beta, self.form)
        return self.propagate(adjacency.matrix(alpha.detach()), x=x, alpha=alpha,
                              adjacency=adjacency)

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor, alpha: Tensor,
                              adjacency: CsrAdjacency) -> Tensor:
        # adj_t carries the same pattern; the custom function keeps alpha differentiable.
        return edge_aggregate(alpha, x, adjacency)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(beta={self.beta}, form={self.form!r})"


# --------------------------------------------------------------------------------------------
# Grid radius graphs: tiles of nodes against their neighbourhoods, as batched dense products.
# --------------------------------------------------------------------------------------------

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
    if grid_weight.ndim != 4 or grid_weight.shape[1] != offsets.shape[0]:
        raise ValueError(f"grid_weight must be [B, O, H, W] with O = {offsets.shape[0]}, got "
                         f"shape {tuple(grid_weight.shape)}")
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
    if h.ndim != 4 or tuple(h.shape[:3]) != tiles.shape:
        raise ValueError(f"h must be [B, H, W, C] with B, H, W = {tiles.shape}, got shape "
                         f"{tuple(h.shape)}")
    if w.shape != (tiles.shape[0],):
        raise ValueError(f"w must be [B] = [{tiles.shape[0]}], got shape {tuple(w.shape)}")
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
    if h.ndim != 4:
        raise ValueError(f"h must be [B, C, H, W], got shape {tuple(h.shape)}")
    batch, _, height, width = h.shape
    expected = (batch, offsets.shape[0], height, width)
    if tuple(grid_weight.shape) != expected:
        raise ValueError(f"grid_weight must be [B, O, H, W] = {list(expected)}, got shape "
                         f"{tuple(grid_weight.shape)}")
    w = torch.as_tensor(w, dtype=h.dtype, device=h.device).reshape(-1)
    if w.numel() == 1:
        w = w.expand(batch)
    if w.numel() != batch:
        raise ValueError(f"w must hold 1 or B = {batch} values, got {w.numel()}")
    tiles = grid_tiles(grid_weight, offsets.to(grid_weight.device))
    out = tiled_affinity_attention(h.permute(0, 2, 3, 1), tiles, w, beta, form)
    return out.permute(0, 3, 1, 2)
