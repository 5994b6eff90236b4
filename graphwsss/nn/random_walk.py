r"""Random-walk propagation over the sparse pixel graph (PSA style), a propagation baseline.

With the graph's edge weights :math:`E_{ij}` (affinities, self loops included; edge ``j -> i`` in
the PyG convention ``edge_index = [source j, target i]``), the transition matrix is

.. math::
    T_{ij} = \frac{E_{ij}^{\beta}}{\sum_{k} E_{ik}^{\beta}}, \qquad
    \hat S = T^{t} S, \quad t = 2^{\texttt{log\_steps}},

so every node's new score is the weighted average of its neighbours' scores (rows of :math:`T`
sum to 1, applied as ``T @ scores``): class probabilities stay probabilities. Defaults
:math:`\beta = 8`, :math:`t = 2^8` as PSA (Ahn & Kwak, CVPR 2018). PSA normalises the columns of
the affinity, :math:`D^{-1} A` with column sums, and multiplies ``CAM @ T``; for a symmetric
affinity (the radius graphs of docs/method.md §5) that is the same operator.

:math:`T` is never dense. Two ways to apply :math:`T^t`:

* ``"matvec"`` (default): :math:`t` sparse products ``T @ S`` with the ``[N, K]`` scores; exact,
  memory :math:`O(E + NK)`, cost :math:`t \cdot E K`.
* ``"squaring"`` (PSA's repeated squaring, :math:`\log_2 t` products ``T @ T``) on a torch
  sparse matrix. The support of :math:`T^{2^k}` grows with every squaring: on a VOC-size graph
  (2,961 nodes, r = 4, RGB-XY weights) :math:`T^{256}` without pruning has 8.47M of the 8.77M
  possible entries, i.e. it is dense. So after each product the entries below ``tolerance`` are
  dropped and the rows renormalised to sum 1; a row summing to 1 keeps at most
  ``1 / tolerance`` entries, so the pruned matrix has at most ``N / tolerance`` non-zeros. The
  work of each product (an upper bound of its non-zeros before pruning) is counted first, and
  more than ``max_products`` is an error instead of an out-of-memory. Pruning is lossy because
  the rows of a long walk are flat. On that graph (one CPU thread, K = 21 or the image's
  classes): tolerance 1e-3 keeps 266 entries per row and takes 2.5–3.5 s; against ``"matvec"``
  it changes the argmax of 1 % of the nodes for one-hot seeds on 10 % of the nodes (unknown
  uniform), and of 51 % for unstructured random scores; 1e-4 keeps 815 per row, needs 1.05e9
  multiply-adds in its last squaring (over the default ``max_products``) and 19 s, and still
  changes 22 % of the random-score argmaxes. ``"matvec"`` takes 0.06–0.15 s there, hence the
  default; ``"squaring"`` is kept for the comparison with PSA and for short walks.

:func:`random_walk` can stop each node after its own number of steps (``node_steps``), and
:func:`step_length` measures how far one step moves (the root-mean-square step on the grid), so
that a walk's length can be set in cells: the output walk of box runs stops each box's cells
once the walk's reach :math:`\sigma\sqrt{t}` passes a share of the box's short side
(``graphwsss.stages.propagate.box_walk_steps``).

:func:`random_walk_probabilities` is the propagator of ``propagator.name = random_walk``: one
graph ``Data`` and initial class scores on its grid in, propagated scores on the grid out. Box
and other seed-based runs build the initial scores with :func:`seed_label_probabilities`
(one-hot seeds, unknown nodes uniform over their allowed classes); image-level runs pass CAM
scores.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor
from torch_geometric.data import Data

from graphwsss.graphs.base import IGNORE_INDEX, cell_node_index, edge_weights
from graphwsss.utils.shapes import check_shape

__all__ = [
    "random_walk",
    "random_walk_probabilities",
    "seed_label_probabilities",
    "step_length",
    "transition_matrix",
    "transition_power",
]

Method = Literal["matvec", "squaring"]


def transition_matrix(edge_index: Tensor, edge_weight: Tensor, num_nodes: int,
                      beta: float = 8.0) -> Tensor:
    r"""Row-stochastic sparse transition matrix :math:`T_{ij} = E_{ij}^\beta / \sum_k E_{ik}^\beta`.

    Row ``i`` is the target of the edges ``edge_index[:, e] = (j, i)``; duplicated edges add up.
    A node without incoming weight (no edge, or all weights 0) keeps its own score
    (:math:`T_{ii} = 1`).

    Args:
        edge_index: ``[2, E]`` long, ``[source j, target i]``.
        edge_weight: ``[E]`` non-negative affinities.
        num_nodes: ``N``.
        beta: exponent :math:`\beta > 0` (default 8).

    Returns:
        Coalesced sparse COO ``[N, N]`` on ``edge_weight``'s device, float32 or float64.
    """
    _check_graph(edge_index, edge_weight, num_nodes)
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta!r}")
    device = edge_weight.device
    dtype = torch.promote_types(edge_weight.dtype, torch.float32)
    source, target = edge_index.to(device)
    values = edge_weight.to(dtype).pow(beta)
    row_sum = torch.zeros(num_nodes, dtype=dtype, device=device).index_add_(0, target, values)
    isolated = (row_sum <= 0).nonzero().flatten()
    if isolated.numel():                         # keep their own score
        source = torch.cat([source, isolated])
        target = torch.cat([target, isolated])
        values = torch.cat([values, values.new_ones(isolated.numel())])
        row_sum[isolated] = 1.0
    values = values / row_sum[target]
    return _sparse(torch.stack([target, source]), values, num_nodes)


def transition_power(transition: Tensor, log_steps: int = 8, tolerance: float = 1e-3,
                     max_products: int = 1_000_000_000) -> Tensor:
    r""":math:`T^{2^{\texttt{log\_steps}}}` by repeated squaring with pruning (module docstring).

    After each squaring, entries below ``tolerance`` are dropped (a row's largest entry is always
    kept) and rows renormalised to 1, so at most ``N / tolerance`` entries remain; see the module
    docstring for the accuracy this costs.

    Args:
        transition: sparse COO ``[N, N]`` row-stochastic (:func:`transition_matrix`).
        log_steps: number of squarings (``t = 2**log_steps``), ``>= 0``.
        tolerance: pruning threshold in ``[0, 1)`` (default 1e-3); 0 keeps everything (exact,
            fill bounded only by ``max_products``).
        max_products: the most multiply-adds one squaring may need (an upper bound of its
            non-zeros before pruning); more raises ``ValueError`` (use ``method="matvec"`` or a
            larger tolerance).

    Returns:
        Sparse COO ``[N, N]``, rows summing to 1.
    """
    if isinstance(log_steps, bool) or int(log_steps) != log_steps or log_steps < 0:
        raise ValueError(f"log_steps must be a non-negative integer, got {log_steps!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    if not transition.is_sparse or transition.ndim != 2:
        raise ValueError("transition must be a 2-D sparse COO tensor (see transition_matrix)")
    power = transition.coalesce()
    num_nodes = power.shape[0]
    for _ in range(int(log_steps)):
        rows, cols = power.indices()
        # Multiply-adds of power @ power: sum over k of |column k| * |row k|.
        work = int((torch.bincount(cols, minlength=num_nodes)
                    * torch.bincount(rows, minlength=num_nodes)).sum())
        if work > max_products:
            raise ValueError(f"squaring the {num_nodes}-node transition matrix "
                             f"({power._nnz()} non-zeros) needs {work} multiply-adds, more than "
                             f"max_products={max_products}: use method='matvec' or a larger tolerance")
        power = torch.sparse.mm(power, power).coalesce()
        if tolerance > 0:
            power = _prune_rows(power, tolerance)
    return power


def random_walk(edge_index: Tensor, edge_weight: Tensor, scores: Tensor, num_nodes: int,
                beta: float = 8.0, log_steps: int = 8, method: Method = "matvec",
                tolerance: float = 1e-3, max_products: int = 1_000_000_000,
                node_steps: Tensor | None = None) -> Tensor:
    r"""Propagate node scores by a random walk, :math:`T^{2^{\texttt{log\_steps}}} S`.

    Runs without autograd, on the device of ``scores``.

    Args:
        edge_index: ``[2, E]`` long ``[source j, target i]`` (include self loops).
        edge_weight: ``[E]`` non-negative affinities :math:`E_{ij}`.
        scores: ``[N, K]`` initial class scores :math:`S`.
        num_nodes: ``N``.
        beta: affinity exponent :math:`\beta` (default 8).
        log_steps: ``t = 2**log_steps`` walk steps (default 8: 256).
        method: ``"matvec"`` (exact, default) or ``"squaring"`` (pruned repeated squaring).
        tolerance, max_products: pruning of ``"squaring"``, see :func:`transition_power`.
        node_steps: optional ``[N]`` integer steps in ``0..2**log_steps``: node ``i``'s row is
            taken after ``node_steps[i]`` steps of the walk (0 keeps its score), so that one
            walk serves nodes that should walk different lengths. ``"matvec"`` only.

    Returns:
        ``[N, K]`` propagated scores (dtype of ``scores``, computed in at least float32).

    Shapes:
        - edge_index: ``[2, E]``; edge_weight: ``[E]``; scores: ``[N, K]``
        - output: ``[N, K]``
    """
    check_shape("scores", scores, "[N, K]", dims=2, dtype="float")
    if scores.shape[0] != num_nodes:
        raise ValueError(f"scores has {scores.shape[0]} rows for num_nodes={num_nodes}")
    if method not in ("matvec", "squaring"):
        raise ValueError(f"method must be 'matvec' or 'squaring', got {method!r}")
    if isinstance(log_steps, bool) or int(log_steps) != log_steps or log_steps < 0:
        raise ValueError(f"log_steps must be a non-negative integer, got {log_steps!r}")
    steps = 2 ** int(log_steps)
    if node_steps is not None:
        check_shape("node_steps", node_steps, f"[N] = [{num_nodes}]", shape=(num_nodes,),
                    dtype="integer")
        if method != "matvec":
            raise ValueError("node_steps needs method='matvec'")
        if bool(((node_steps < 0) | (node_steps > steps)).any()):
            raise ValueError(f"node_steps must be in 0..{steps} (2**log_steps)")
        node_steps = node_steps.to(scores.device)
    with torch.no_grad():
        edge_weight = edge_weight.to(scores.device)
        transition = transition_matrix(edge_index.to(scores.device), edge_weight, num_nodes, beta)
        result = scores.to(transition.dtype)
        if method == "squaring":
            transition = transition_power(transition, log_steps, tolerance, max_products)
            return torch.sparse.mm(transition, result).to(scores.dtype)
        with warnings.catch_warnings():          # torch's one-time "CSR is beta" notice
            warnings.simplefilter("ignore", UserWarning)
            transition = transition.to_sparse_csr()  # 12x faster than COO for T @ S on CPU
        if node_steps is None:
            for _ in range(steps):
                result = transition @ result
            return result.to(scores.dtype)
        taken = result.clone()                   # nodes with 0 steps keep their scores
        for step in range(1, int(node_steps.max()) + 1):
            result = transition @ result
            stop = node_steps == step
            taken[stop] = result[stop]
        return taken.to(scores.dtype)


def step_length(graph: Data, beta: float = 8.0) -> float:
    r"""The walk's root-mean-square step on the grid, in cells:

    .. math::
        \sigma = \Big(\frac{1}{N} \sum_i \sum_j T_{ij}\, \lVert p_j - p_i \rVert^2\Big)^{1/2},

    with :math:`p_i` the graph's node position ``pos`` (``(row, column)`` on the grid, the mean
    of its cells' for superpixel nodes, as every builder of :mod:`graphwsss.graphs` sets it).
    After :math:`t` steps a walk has moved about :math:`\sigma \sqrt{t}` cells (its reach)."""
    if getattr(graph, "pos", None) is None:
        raise ValueError("graph has no node positions (pos)")
    edge_weight = edge_weights(graph)
    position = graph.pos.to(edge_weight.device, torch.float64)
    with torch.no_grad():
        transition = transition_matrix(graph.edge_index, edge_weight, graph.num_nodes, beta)
        target, source = transition.indices()
        squared = (position[source] - position[target]).pow(2).sum(1)
        return float((transition.values().double() * squared).sum()
                     / max(graph.num_nodes, 1)) ** 0.5


def random_walk_probabilities(graph: Data, initial_probs: Tensor, beta: float = 8.0,
                              log_steps: int = 8, method: Method = "matvec",
                              tolerance: float = 1e-3, cell_steps: Tensor | None = None) -> Tensor:
    r"""The ``random_walk`` propagator: propagate grid scores over one image's graph.

    Node scores are the grid scores of the node's cells (averaged when a node covers several
    cells, as superpixel graphs' ``cell_node``), walked with :func:`random_walk` over
    ``graph.edge_index`` / ``graph.edge_attr``, and read back per cell.

    Args:
        graph: a graph ``Data`` of :mod:`graphwsss.graphs` (``edge_index``, ``edge_attr`` with
            self loops, ``grid_shape``, optional ``cell_node``).
        initial_probs: ``[K, h, w]`` initial class scores on the graph's grid: from seeds
            :func:`seed_label_probabilities`, or CAM scores for image-level runs.
        beta, log_steps, method, tolerance: as :func:`random_walk`.
        cell_steps: optional ``[h, w]`` integer steps per cell (``node_steps`` of
            :func:`random_walk`; a node covering several cells takes the fewest of them).

    Returns:
        ``[K, h, w]``; rows of :math:`T` sum to 1, so per-cell class probabilities stay
        probabilities (argmax gives the label).
    """
    if not isinstance(graph, Data) or graph.edge_index is None:
        raise ValueError(f"graph must be a torch_geometric Data with edge_index, "
                         f"got {type(graph).__name__}")
    height, width = graph.grid_shape
    check_shape("initial_probs", initial_probs, f"[K, h, w] = [K, {height}, {width}]",
                shape=(None, height, width), what="tensor on the graph's grid")
    edge_weight = edge_weights(graph)
    device = initial_probs.device
    num_classes = initial_probs.shape[0]
    cell_scores = initial_probs.reshape(num_classes, -1).t()                  # [h * w, K]
    node_of_cell = cell_node_index(graph).to(device)
    num_nodes = graph.num_nodes
    if getattr(graph, "cell_node", None) is None:
        node_scores = cell_scores
    else:                                        # mean over each node's cells
        node_scores = cell_scores.new_zeros(num_nodes, num_classes).index_add_(
            0, node_of_cell, cell_scores)
        counts = torch.bincount(node_of_cell, minlength=num_nodes).clamp_min(1)
        node_scores = node_scores / counts.unsqueeze(1).to(node_scores.dtype)
    node_steps = None
    if cell_steps is not None:
        check_shape("cell_steps", cell_steps, f"[h, w] = [{height}, {width}]",
                    shape=(height, width), dtype="integer")
        node_steps = torch.full((num_nodes,), 2 ** int(log_steps), dtype=torch.long,
                                device=device).scatter_reduce(
            0, node_of_cell, cell_steps.reshape(-1).to(device, torch.long), "amin")
    walked = random_walk(graph.edge_index, edge_weight, node_scores, num_nodes, beta,
                         log_steps, method, tolerance, node_steps=node_steps)
    return walked[node_of_cell].t().reshape(num_classes, height, width)


def seed_label_probabilities(seed_labels: Tensor, num_classes: int,
                             allowed: Tensor | None = None) -> Tensor:
    r"""Initial scores of a seed-based random walk: one-hot seeds, unknown cells uniform.

    A seeded cell (label ``0..K-1``) gets its one-hot vector; an unknown cell (255) gets
    :math:`1/|A|` on each class of its allowed set :math:`A` (all ``K`` classes by default; for
    boxes, e.g. background and the classes of the boxes covering it). Unknown cells thus add the
    same mass to every class they may take and the walk's argmax is decided by the seeds it
    reaches.

    Args:
        seed_labels: ``[h, w]`` long, 0 background, 1..K-1 classes, 255 unknown.
        num_classes: ``K`` (background included).
        allowed: optional ``[K, h, w]`` bool, the classes each cell may take.

    Returns:
        ``[K, h, w]`` float32, each cell summing to 1.
    """
    check_shape("seed_labels", seed_labels, "[h, w]", dims=2, dtype="integer")
    known = seed_labels != IGNORE_INDEX
    if bool((known & ((seed_labels < 0) | (seed_labels >= num_classes))).any()):
        raise ValueError(f"seed_labels must be in 0..{num_classes - 1} or {IGNORE_INDEX}")
    shape = (num_classes, *seed_labels.shape)
    if allowed is None:
        allowed = torch.ones(shape, dtype=torch.bool, device=seed_labels.device)
    else:
        check_shape("allowed", allowed, f"[K, h, w] = {list(shape)}", shape=shape, dtype="bool")
    uniform = allowed.float()
    count = uniform.sum(0, keepdim=True)
    if bool((~known & (count[0] == 0)).any()):
        raise ValueError("allowed leaves some unknown cells without any class")
    uniform = uniform / count.clamp_min(1.0)
    one_hot = torch.zeros(shape, device=seed_labels.device).scatter_(
        0, seed_labels.clamp(0, num_classes - 1).long().unsqueeze(0), 1.0)
    return torch.where(known.unsqueeze(0), one_hot, uniform)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _sparse(indices: Tensor, values: Tensor, num_nodes: int) -> Tensor:
    return torch.sparse_coo_tensor(indices, values, (num_nodes, num_nodes),
                                   check_invariants=False).coalesce()


def _prune_rows(matrix: Tensor, tolerance: float) -> Tensor:
    """Drop entries below ``tolerance`` and renormalise every row to sum 1 (row maxima kept)."""
    rows, cols = matrix.indices()
    values = matrix.values()
    num_nodes = matrix.shape[0]
    row_max = torch.full((num_nodes,), -1.0, dtype=values.dtype, device=values.device)
    row_max = row_max.scatter_reduce(0, rows, values, reduce="amax")
    keep = (values >= tolerance) | (values >= row_max[rows])   # never empty a row
    rows, cols, values = rows[keep], cols[keep], values[keep]
    row_sum = torch.zeros(num_nodes, dtype=values.dtype, device=values.device).index_add_(
        0, rows, values)
    return _sparse(torch.stack([rows, cols]), values / row_sum[rows], num_nodes)


def _check_graph(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> None:
    if isinstance(num_nodes, bool) or int(num_nodes) != num_nodes or num_nodes < 1:
        raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
    check_shape("edge_index", edge_index, "[2, E]", shape=(2, None), dtype="integer")
    check_shape("edge_weight", edge_weight, f"[E] = [{edge_index.shape[1]}]",
                shape=(edge_index.shape[1],), dtype="float")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index refers to nodes outside 0..{num_nodes - 1}")
    if edge_weight.numel() and not bool(torch.isfinite(edge_weight).all()
                                        and (edge_weight >= 0).all()):
        raise ValueError("edge_weight must be finite and non-negative")
