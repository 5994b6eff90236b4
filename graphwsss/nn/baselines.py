r"""Baseline propagators with the A²GNN's batched interface, and the factory of all propagators.

Every propagator built by :func:`build_propagator` trains ``B`` independent per-image models as
one batched problem (:mod:`graphwsss.nn.batched`: parameters with a leading image dimension,
the batch's graphs one block-diagonal edge list) and returns ``(logits [B, Nmax, K],
hidden [B, Nmax, hidden])`` for the grid and the edge layouts alike, so that the propagation
stage and the benchmarks can swap them by name:

==========  =================================================================================
name        per image
==========  =================================================================================
``a2gnn``   :class:`~graphwsss.nn.a2gnn.A2GNN` (3.16–3.19)
``gcn``     embedding, ``L`` GCN layers (as :class:`~torch_geometric.nn.GCNConv`, edge weights
            used, ReLU between layers), output layer
``gat``     embedding, ``L`` GAT layers (as :class:`~torch_geometric.nn.GATConv`: ``heads``
            heads concatenated, edge weight as a 1-d edge feature, ReLU between layers),
            output layer
``agnn``    embedding, ``L`` AGNN layers (as :class:`~torch_geometric.nn.AGNNConv`: no edge
            weights, no nonlinearity, as the A²GNN), output layer
``none``    embedding and output layer only: a per-node seed classifier, no propagation
==========  =================================================================================

The embedding is :math:`H^1 = \operatorname{dropout}(\operatorname{ReLU}(X W^0))` and the output
:math:`H^{L+1} W^{L+1}`, both without bias, as in the A²GNN; the layers have no bias either.
Each layer computes exactly what the PyG layer computes for one image (checked against the PyG
layers with copied weights in ``tests/nn/test_baselines.py``), with the per-edge work done once
for the whole batch by the CSR operators of :mod:`graphwsss.nn.csr`
(:class:`~graphwsss.nn.csr.CsrAdjacency`, :func:`~graphwsss.nn.csr.segment_masked_softmax`,
:func:`~graphwsss.nn.csr.edge_aggregate`, shared with the A²GNN). One class per baseline
(:class:`GCNPropagator`, :class:`GATPropagator`, :class:`AGNNPropagator`,
:class:`NoPropagator`), on the common frame :class:`BatchedBaseline`:

* GCN (Kipf & Welling): :math:`H' = \hat D^{-1/2} \hat A \hat D^{-1/2} H W`, with
  :math:`\hat A` the weighted adjacency plus self loops of weight 1 where missing (existing
  self loops keep their weight) and :math:`\hat D` its in-degree (row sums);
* GAT (Veličković et al.): per head :math:`k`, :math:`\alpha_{ij} = \operatorname{softmax}_{j}
  \big(\operatorname{LeakyReLU}_{0.2}(a_s^\top W_k h_j + a_t^\top W_k h_i + a_e^\top
  W_{e,k} E_{ij})\big)` over the in-neighbours of ``i``, :math:`h'_i = \Vert_k \sum_j
  \alpha_{ij} W_k h_j`; self loops are replaced by loops whose edge weight is the mean of the
  node's incoming weights (PyG's ``fill_value="mean"``);
* AGNN (Thekumparampil et al.): :math:`h'_i = \sum_j \operatorname{softmax}_j(\beta
  \cos(h_i, h_j))\, h_j` with a learnable :math:`\beta` (initialised 1), self loops added; this
  is the affinity attention of the A²GNN with :math:`w = \beta`, no edge term, every edge kept
  (:func:`~graphwsss.nn.affinity_attention.edge_attention`, ``beta=0``, ``form="paper"``).

Initialisation per image, from the image's generator, in this order: :math:`W^0`, the layers
(Glorot-uniform as PyG: GCN weight; GAT weight, :math:`a_s`, :math:`a_t`, edge weight,
:math:`a_e`; AGNN :math:`\beta = 1`), :math:`W^{L+1}`.
"""

from __future__ import annotations

from typing import Callable, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter
from torch_geometric.utils import scatter

from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.affinity_attention import edge_attention
from graphwsss.nn.csr import CsrAdjacency, edge_aggregate, segment_masked_softmax
from graphwsss.nn.batched import BatchedPropagator, draw_glorot

PROPAGATORS = ("a2gnn", "gcn", "gat", "agnn", "none")
GAT_NEGATIVE_SLOPE = 0.2


def gcn_adjacency(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> CsrAdjacency:
    r"""The GCN propagation matrix :math:`\hat D^{-1/2} \hat A \hat D^{-1/2}` as a
    :class:`CsrAdjacency` whose edge weights are the normalised ones (PyG ``gcn_norm``): self
    loops of weight 1 added where missing, :math:`\hat D_{ii} = \sum_j \hat A_{ij}`."""
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, num_nodes)
    weight = adjacency.edge_weight
    degree = weight.new_zeros(num_nodes).index_add_(0, adjacency.target, weight)
    inverse_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    normalised = inverse_sqrt[adjacency.target] * weight * inverse_sqrt[adjacency.source]
    return CsrAdjacency(adjacency.crow, adjacency.source, adjacency.target, normalised,
                        adjacency.order, num_nodes)


def gat_adjacency(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> CsrAdjacency:
    """GAT's graph (PyG ``fill_value="mean"``): existing self loops removed, one loop per node
    added whose weight is the mean of the node's other incoming edge weights (0 if none)."""
    other = edge_index[0] != edge_index[1]
    edge_index, edge_weight = edge_index[:, other], edge_weight[other]
    loop_weight = scatter(edge_weight, edge_index[1], 0, dim_size=num_nodes, reduce="mean")
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    return CsrAdjacency.from_edge_index(torch.cat([edge_index, loops], 1),
                                        torch.cat([edge_weight, loop_weight]), num_nodes,
                                        add_self_loops=False)


def per_node(values: Tensor, num_nodes: int) -> Tensor:
    """``[B, ...]`` per-image values repeated for each of the ``Nmax`` nodes:
    ``[B * Nmax, ...]``."""
    return values.repeat_interleave(num_nodes, dim=0)


class BatchedBaseline(BatchedPropagator):
    """The frame of the baselines: ``num_images`` independent models (see the module table) as
    one batched model; the embedding, ``num_layers`` layers of :meth:`layer` (ReLU between
    them where :attr:`relu_between_layers`), the output layer.

    Args:
        in_channels: node feature size ``F``.
        num_classes: ``K``.
        num_images: ``B``.
        hidden: hidden width. (default: 256)
        num_layers: propagation layers. (default: 3)
        dropout: drop probability after the embedding. (default: 0.5)
        generators: one ``torch.Generator`` per image, or ``None``.

    Parameters have the image first and the layer second; a layer's ``layer_weight[b, l]`` is
    the transpose of the PyG layer's ``lin.weight``.

    Shapes: as :class:`~graphwsss.nn.batched.BatchedPropagator`.
    """

    kind: ClassVar[str]
    relu_between_layers: ClassVar[bool] = False
    # The batch's graph as the layers want it (default: self loops of weight 1 added).
    build_adjacency: ClassVar[Optional[Callable[[Tensor, Tensor, int], CsrAdjacency]]] = None

    def __init__(self, in_channels: int, num_classes: int, num_images: int,
                 hidden: int = 256, num_layers: int = 3, dropout: float = 0.5,
                 generators: Optional[Sequence[torch.Generator]] = None) -> None:
        super().__init__(in_channels, num_classes, num_images, hidden, dropout, generators)
        self.num_layers = num_layers
        self.create_layers()
        self.reset_parameters()

    def create_layers(self) -> None:
        """Create the layers' parameters ``[B, L, ...]``."""

    def draw_layer(self, index: int, layer: int, generator: Optional[torch.Generator]) -> None:
        """Draw image ``index``'s parameters of ``layer`` from ``generator``."""

    def reset_image(self, index: int, generator: Optional[torch.Generator]) -> None:
        self.draw_embedding(index, generator)
        for layer in range(self.num_layers):
            self.draw_layer(index, layer, generator)
        self.draw_output(index, generator)

    def propagate(self, h: Tensor, graph: dict) -> Tensor:
        if self.num_layers == 0:
            return h
        batch, num_nodes = h.shape[:2]
        build = type(self).build_adjacency
        adjacency = self.adjacency(graph, batch * num_nodes, build)
        for layer in range(self.num_layers):
            h = self.layer(h, adjacency, layer)
            if self.relu_between_layers and layer < self.num_layers - 1:
                h = F.relu(h)
        return h

    def layer(self, h: Tensor, adjacency: CsrAdjacency, layer: int) -> Tensor:
        """Layer ``layer`` on ``h`` ``[B, Nmax, C]``."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.num_classes}, num_images={self.num_images}, "
                f"hidden={self.hidden}, num_layers={self.num_layers}, dropout={self.dropout.p}")


class GCNPropagator(BatchedBaseline):
    """GCN layers (as :class:`~torch_geometric.nn.GCNConv`); parameters ``layer_weight``
    ``[B, L, C, C]``."""

    kind = "gcn"
    relu_between_layers = True
    build_adjacency = staticmethod(gcn_adjacency)

    def create_layers(self) -> None:
        self.layer_weight = Parameter(torch.empty(self.num_images, self.num_layers, self.hidden,
                                                  self.hidden))

    def draw_layer(self, index: int, layer: int, generator: Optional[torch.Generator]) -> None:
        self.layer_weight[index, layer] = draw_glorot((self.hidden, self.hidden), generator)

    def layer(self, h: Tensor, adjacency: CsrAdjacency, layer: int) -> Tensor:
        r""":math:`\hat D^{-1/2} \hat A \hat D^{-1/2} (H W)` for ``h`` ``[B, Nmax, C]``
        (``adjacency`` from :func:`gcn_adjacency`)."""
        batch, num_nodes, channels = h.shape
        projected = torch.bmm(h, self.layer_weight[:, layer]).reshape(-1, channels)
        return edge_aggregate(adjacency.edge_weight, projected, adjacency).view(batch, num_nodes,
                                                                                channels)


class GATPropagator(BatchedBaseline):
    """GAT layers (as :class:`~torch_geometric.nn.GATConv`, heads concatenated, the edge weight
    a 1-d edge feature).

    Args:
        heads: attention heads (``hidden`` must be divisible by it). (default: 4)
        others: as :class:`BatchedBaseline`.

    Parameters (``C = hidden``, ``H = heads``, ``D = C / H``): ``layer_weight``
    ``[B, L, C, C]``, ``attention_source``, ``attention_target``, ``attention_edge``
    ``[B, L, H, D]``, ``edge_weight_projection`` ``[B, L, C]``.
    """

    kind = "gat"
    relu_between_layers = True
    build_adjacency = staticmethod(gat_adjacency)

    def __init__(self, in_channels: int, num_classes: int, num_images: int,
                 hidden: int = 256, num_layers: int = 3, dropout: float = 0.5, heads: int = 4,
                 generators: Optional[Sequence[torch.Generator]] = None) -> None:
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        super().__init__(in_channels, num_classes, num_images, hidden, num_layers, dropout,
                         generators)

    def create_layers(self) -> None:
        images, layers, hidden = self.num_images, self.num_layers, self.hidden
        head_size = hidden // self.heads
        self.layer_weight = Parameter(torch.empty(images, layers, hidden, hidden))
        self.attention_source = Parameter(torch.empty(images, layers, self.heads, head_size))
        self.attention_target = Parameter(torch.empty(images, layers, self.heads, head_size))
        self.edge_weight_projection = Parameter(torch.empty(images, layers, hidden))
        self.attention_edge = Parameter(torch.empty(images, layers, self.heads, head_size))

    def draw_layer(self, index: int, layer: int, generator: Optional[torch.Generator]) -> None:
        hidden, heads, head_size = self.hidden, self.heads, self.hidden // self.heads
        self.layer_weight[index, layer] = draw_glorot((hidden, hidden), generator)
        self.attention_source[index, layer] = draw_glorot((heads, head_size), generator)
        self.attention_target[index, layer] = draw_glorot((heads, head_size), generator)
        self.edge_weight_projection[index, layer] = draw_glorot((hidden, 1), generator)[:, 0]
        self.attention_edge[index, layer] = draw_glorot((heads, head_size), generator)

    def layer(self, h: Tensor, adjacency: CsrAdjacency, layer: int) -> Tensor:
        """GATConv (heads concatenated, 1-d edge feature) for ``h`` ``[B, Nmax, C]``."""
        batch, num_nodes, channels = h.shape
        heads, head_size = self.heads, channels // self.heads
        weight = self.layer_weight[:, layer]                                    # [B, C, H * D]
        projected = torch.bmm(h, weight)
        # a_s . (W_k h) = (W_k a_s) . h: both heads' scores from one [B, C, 2H] product.
        attention = torch.stack([self.attention_source[:, layer],
                                 self.attention_target[:, layer]], dim=2)       # [B, H, 2, D]
        score_vectors = torch.einsum("bckd,bksd->bcsk",
                                     weight.reshape(batch, channels, heads, head_size), attention)
        scores = torch.bmm(h, score_vectors.reshape(batch, channels, 2 * heads))
        scores = scores.reshape(batch * num_nodes, 2, heads)
        # lin_edge then att_edge on a 1-d edge feature E: E * sum_d(W_e[k, d] a_e[k, d]).
        edge_slope = (self.edge_weight_projection[:, layer].view(batch, heads, head_size)
                      * self.attention_edge[:, layer]).sum(-1)                  # [B, H]
        source, target = adjacency.source, adjacency.target
        logits = (scores[:, 0].index_select(0, source) + scores[:, 1].index_select(0, target)
                  + adjacency.edge_weight.unsqueeze(1)
                  * per_node(edge_slope, num_nodes).index_select(0, target))
        logits = F.leaky_relu(logits, GAT_NEGATIVE_SLOPE)
        alpha = segment_masked_softmax(logits, target, adjacency.num_nodes)  # [E, H]
        flat = projected.reshape(-1, heads, head_size)
        out = torch.cat([edge_aggregate(alpha[:, k], flat[:, k], adjacency)
                         for k in range(heads)], dim=1)
        return out.view(batch, num_nodes, channels)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, heads={self.heads}"


class AGNNPropagator(BatchedBaseline):
    """AGNN layers (as :class:`~torch_geometric.nn.AGNNConv`); parameters ``attention_beta``
    ``[B, L]``."""

    kind = "agnn"

    def create_layers(self) -> None:
        self.attention_beta = Parameter(torch.empty(self.num_images, self.num_layers))

    def draw_layer(self, index: int, layer: int, generator: Optional[torch.Generator]) -> None:
        self.attention_beta[index, layer] = 1.0

    def layer(self, h: Tensor, adjacency: CsrAdjacency, layer: int) -> Tensor:
        r""":math:`\sum_j \operatorname{softmax}_j(\beta \cos(h_i, h_j)) h_j` for ``h``
        ``[B, Nmax, C]``."""
        batch, num_nodes, channels = h.shape
        flat = h.reshape(-1, channels)
        beta = per_node(self.attention_beta[:, layer], num_nodes)
        alpha = edge_attention(flat, adjacency, beta, beta=0.0, form="paper")
        return edge_aggregate(alpha, flat, adjacency).view(batch, num_nodes, channels)


class NoPropagator(BatchedBaseline):
    """Embedding and output layer only: a per-node seed classifier (``num_layers`` is
    ignored)."""

    kind = "none"

    def __init__(self, in_channels: int, num_classes: int, num_images: int,
                 hidden: int = 256, num_layers: int = 3, dropout: float = 0.5,
                 generators: Optional[Sequence[torch.Generator]] = None) -> None:
        super().__init__(in_channels, num_classes, num_images, hidden, 0, dropout, generators)


BASELINES: dict[str, type[BatchedBaseline]] = {
    cls.kind: cls for cls in (GCNPropagator, GATPropagator, AGNNPropagator, NoPropagator)}


def build_propagator(name: str, in_channels: int, num_classes: int, num_images: int,
                     generators: Optional[Sequence[torch.Generator]] = None,
                     **options) -> nn.Module:
    """Build a batched propagator by name (one of :data:`PROPAGATORS`).

    Args:
        name: ``"a2gnn"``, ``"gcn"``, ``"gat"``, ``"agnn"`` or ``"none"``.
        in_channels, num_classes, num_images: as :class:`~graphwsss.nn.a2gnn.A2GNN`.
        generators: one ``torch.Generator`` per image, or ``None``.
        **options: keyword options of :class:`~graphwsss.nn.a2gnn.A2GNN` (``hidden``,
            ``num_layers``, ``dropout``, ``beta``, ``form``, ``tile``) or of
            :class:`BatchedBaseline` (``hidden``, ``num_layers``, ``dropout``; ``heads`` for
            ``"gat"``).
    """
    if name == "a2gnn":
        return A2GNN(in_channels, num_classes, num_images, generators=generators, **options)
    if name in BASELINES:
        return BASELINES[name](in_channels, num_classes, num_images, generators=generators,
                               **options)
    raise ValueError(f"unknown propagator {name!r}; known: {', '.join(PROPAGATORS)}")
