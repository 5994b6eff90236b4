"""Tests for graphwsss.nn.affinity_attention: the rule (3.17-3.18) and its MessagePassing layer."""

import math

import pytest
import torch

from graphwsss.nn.affinity_attention import AffinityAttentionConv, edge_attention
from graphwsss.nn.csr import CsrAdjacency, edge_aggregate

from .attention_cases import naive_attention, random_graph


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_conv_matches_edge_by_edge_oracle_on_a_general_graph(form):
    generator = torch.Generator().manual_seed(3)
    edge_index, edge_weight = random_graph(30, 200, seed=3)
    x = torch.randn(30, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    conv = AffinityAttentionConv(form=form).double()
    out = conv(x, edge_index, edge_weight)
    w = conv.weight.detach().clone().requires_grad_(True)
    expected, _ = naive_attention(x, edge_index, edge_weight, w, 10.0, form)
    torch.testing.assert_close(out, expected)
    upstream = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    grads = torch.autograd.grad((out * upstream).sum(), [x, conv.weight])
    expected_grads = torch.autograd.grad((expected * upstream).sum(), [x, w])
    torch.testing.assert_close(grads[0], expected_grads[0])
    torch.testing.assert_close(grads[1], expected_grads[1])


def test_gradcheck_edge_path():
    edge_index, edge_weight = random_graph(12, 50, seed=4)
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 12)
    x = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: edge_aggregate(edge_attention(x, adjacency, w, 2.0, "paper"), x, adjacency),
        (x, w))


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_weights_sum_to_one_over_present_edges(form):
    edge_index, edge_weight = random_graph(40, 300, seed=6)
    x = torch.randn(40, 8, dtype=torch.float64)
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 40)
    p = edge_attention(x, adjacency, torch.tensor(0.5, dtype=torch.float64), 10.0, form)
    totals = torch.zeros(40, dtype=torch.float64).index_add(0, adjacency.target, p)
    torch.testing.assert_close(totals, torch.ones(40, dtype=torch.float64))
    assert (p >= 0).all()


def three_node_case():
    """Node 0 with neighbours 1 (cos < 0) and 2 (cos > 0)."""
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.2], [1.0, 1.0]], dtype=torch.float64)
    edge_index = torch.tensor([[1, 2], [0, 0]])
    edge_weight = torch.tensor([0.9, 0.4], dtype=torch.float64)
    return x, edge_index, edge_weight


def test_reference_form_masks_negative_cosine_edges():
    x, edge_index, edge_weight = three_node_case()
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 3)
    w = torch.tensor(0.3, dtype=torch.float64)
    p = edge_attention(x, adjacency, w, 10.0, "reference")
    into_zero = {int(j): float(v) for j, v, i in zip(adjacency.source, p, adjacency.target) if i == 0}
    assert into_zero[1] == 0.0
    cos02 = 1 / math.sqrt(2)
    self_term, term2 = math.exp(0.3 + 10.0), math.exp(0.3 * cos02 + 10.0 * 0.4)
    assert into_zero[0] == pytest.approx(self_term / (self_term + term2), rel=1e-12)
    assert into_zero[2] == pytest.approx(term2 / (self_term + term2), rel=1e-12)


def test_paper_form_keeps_negative_cosine_edges_without_edge_term():
    x, edge_index, edge_weight = three_node_case()
    adjacency = CsrAdjacency.from_edge_index(edge_index, edge_weight, 3)
    p = edge_attention(x, adjacency, torch.tensor(0.3, dtype=torch.float64), 10.0, "paper")
    into_zero = {int(j): float(v) for j, v, i in zip(adjacency.source, p, adjacency.target) if i == 0}
    cos01 = -1 / math.sqrt(1.04)
    cos02 = 1 / math.sqrt(2)
    terms = [math.exp(0.3 + 10.0), math.exp(0.3 * cos01), math.exp(0.3 * cos02 + 10.0 * 0.4)]
    assert into_zero[1] > 0
    for j in range(3):
        assert into_zero[j] == pytest.approx(terms[j] / sum(terms), rel=1e-12)


def test_node_without_surviving_edges_receives_zero():
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64)  # node 0: zero features
    edge_index = torch.tensor([[1], [0]])
    conv = AffinityAttentionConv(form="reference").double()
    out = conv(x, edge_index, torch.tensor([0.5], dtype=torch.float64))
    assert torch.equal(out[0], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(out[1], x[1])
    assert torch.isfinite(out).all()


def test_w_and_x_receive_gradients():
    edge_index, edge_weight = random_graph(20, 120, seed=7, dtype=torch.float32)
    x = torch.randn(20, 6, requires_grad=True)
    conv = AffinityAttentionConv()
    assert 0.0 <= conv.weight.item() <= 1.0
    (conv(x, edge_index, edge_weight) ** 2).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().item() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()

    fixed = AffinityAttentionConv(requires_grad=False)
    assert "weight" not in dict(fixed.named_parameters())


def test_reset_parameters_draws_w_from_generator():
    conv = AffinityAttentionConv()
    conv.reset_parameters(torch.Generator().manual_seed(9))
    first = conv.weight.clone()
    conv.reset_parameters(torch.Generator().manual_seed(9))
    assert torch.equal(first, conv.weight)
    assert torch.equal(first, torch.rand(1, generator=torch.Generator().manual_seed(9)))


def test_input_validation():
    with pytest.raises(ValueError, match="form"):
        AffinityAttentionConv(form="other")
    adjacency = CsrAdjacency.from_edge_index(torch.tensor([[0], [1]]), None, 2)
    with pytest.raises(ValueError, match="x must"):
        edge_attention(torch.rand(3, 2), adjacency, torch.tensor(0.5))
