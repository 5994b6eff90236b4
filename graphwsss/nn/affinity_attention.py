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

This module holds the rule (:func:`attention_logits`, :func:`masked_softmax`) and its form on
any graph: :func:`edge_attention` and the PyG ``MessagePassing`` layer
:class:`AffinityAttentionConv`, with the edges sorted by target into a CSR matrix
(:class:`~graphwsss.nn.csr.CsrAdjacency`); the cosines are a sampled dense-dense product and the
aggregation a sparse-dense product (:mod:`graphwsss.nn.csr`), so no ``[E, C]`` tensor is ever
built; the softmax runs on ``[E]`` scalars. The tiled form on grid radius graphs, what the
A²GNN runs, is :mod:`graphwsss.nn.tiled_attention`; both give the same values and gradients.

Speed notes (2-core CPU, VOC-size graph of 63 x 47 nodes, 256 channels, 81-offset window, one
layer forward + backward): a loop of shifted views (one memory-bound pass per offset and per
pass, ~6 passes of 81 offsets) took ~170-220 ms, the tiled matrix products ~55-75 ms, the CSR
path ~140 ms; dense ``N x N`` matrices several times more, and ``O(N²)`` memory.
"""


from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn.conv import MessagePassing

from graphwsss.nn.csr import CsrAdjacency, edge_aggregate, edge_self_dot, segment_masked_softmax
from graphwsss.utils.shapes import check_shape

Form = Literal["reference", "paper"]
FORMS = ("reference", "paper")


def check_form(form: str) -> None:
    """Raise ``ValueError`` unless ``form`` is one of :data:`FORMS`."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")



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
    check_shape("x", x, f"[N, C] (N = {adjacency.num_nodes})", shape=(adjacency.num_nodes, None))
    w = w.reshape(-1)
    if w.numel() == x.shape[0]:
        w = w.index_select(0, adjacency.target)
    elif w.numel() != 1:
        raise ValueError(f"w must hold 1 or N = {x.shape[0]} values, got {w.numel()}")
    cos = edge_self_dot(F.normalize(x, dim=-1), adjacency)
    logits = attention_logits(cos, beta * adjacency.edge_weight, w, form)
    return segment_masked_softmax(logits, adjacency.target, adjacency.num_nodes)


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

