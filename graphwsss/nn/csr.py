r"""Sparse operators on a graph's edges sorted by target (CSR): the layout of every graph layer
of :mod:`graphwsss.nn` on general graphs (the A²GNN's ``edges`` layout and the baselines).

* :class:`CsrAdjacency`: the edges sorted by target, built once per graph and reused by every
  layer;
* :func:`edge_self_dot`: :math:`\langle x_i, x_j \rangle` at every edge, a sampled dense-dense
  product (``torch.sparse.sampled_addmm``), so no ``[E, C]`` tensor is built;
* :func:`edge_aggregate`: :math:`\sum_j p_{ij} x_j`, a sparse-dense product (``torch.sparse.mm``);
* :func:`segment_masked_softmax`: the softmax over each node's in-edges.

The two products are custom autograd functions whose backward passes are sparse products too.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor
from torch_geometric.utils import add_remaining_self_loops

from graphwsss.utils.shapes import check_shape


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
        check_shape("edge_index", edge_index, "[2, E]", shape=(2, None))
        if edge_index.dtype != torch.long:
            raise ValueError(f"edge_index must be long, got {edge_index.dtype}")
        num_edges = edge_index.shape[1]
        if edge_weight is None:
            edge_weight = torch.ones(num_edges, device=edge_index.device)
        check_shape("edge_weight", edge_weight, f"[E] = [{num_edges}]", shape=(num_edges,))
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


def edge_self_dot(x: Tensor, adjacency: CsrAdjacency) -> Tensor:
    r"""``[E]``: :math:`\langle x_i, x_j \rangle` at every sorted edge ``(j -> i)`` of
    ``adjacency``, for ``x`` ``[N, C]``; differentiable (the backward pass is two sparse
    products)."""
    return _EdgeSelfDot.apply(x, adjacency)


def edge_aggregate(p: Tensor, x: Tensor, adjacency: CsrAdjacency) -> Tensor:
    r"""``[N, C]``: :math:`\sum_{j \in S(i)} p_{ij} x_j` for ``p`` ``[E]`` at the sorted edges."""
    return _EdgeAggregate.apply(p, x, adjacency)

