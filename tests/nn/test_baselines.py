import pytest
import torch
import torch.nn.functional as F
from torch_geometric.nn import AGNNConv, GATConv, GCNConv

from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.baselines import (PROPAGATORS, AGNNPropagator, BatchedBaseline, GATPropagator,
                                    GCNPropagator, NoPropagator, build_propagator)

from .test_a2gnn import (IGNORE, IN_CHANNELS, NUM_CLASSES, edge_batch, generators, grid_batch,
                         make_images, train)

SIZES = [(5, 6), (4, 7)]


def run_grid(name, images, offsets, indices, steps=5, **options):
    x, grid_weight, seeds = grid_batch([images[i] for i in indices])
    model = build_propagator(name, IN_CHANNELS, NUM_CLASSES, len(indices),
                             generators(indices), hidden=16, **options)
    logits, hidden = train(model, lambda m: m(x, grid_weight=grid_weight, offsets=offsets),
                           seeds, steps)
    width = x.shape[-1]
    crops = []
    for b, index in enumerate(indices):
        height_b, width_b = images[index][0].shape[1:]
        crops.append(logits[b].view(-1, width, NUM_CLASSES)[:height_b, :width_b])
    return crops, logits, hidden


def test_factory_names_and_unknown_name():
    assert PROPAGATORS == ("a2gnn", "gcn", "gat", "agnn", "none")
    assert isinstance(build_propagator("a2gnn", 4, 3, 2), A2GNN)
    classes = {"gcn": GCNPropagator, "gat": GATPropagator, "agnn": AGNNPropagator,
               "none": NoPropagator}
    for name, cls in classes.items():
        model = build_propagator(name, 4, 3, 2, hidden=8)
        assert type(model) is cls and isinstance(model, BatchedBaseline) and model.kind == name
        assert all(parameter.shape[0] == 2 for parameter in model.parameters())
    with pytest.raises(ValueError, match="a2gnn, gcn, gat, agnn, none"):
        build_propagator("graphsage", 4, 3, 2)
    with pytest.raises(TypeError):
        build_propagator("gcn", 4, 3, 2, beta=3.0)  # an A2GNN-only option
    with pytest.raises(TypeError):
        build_propagator("gcn", 4, 3, 2, heads=2)   # a GAT-only option
    with pytest.raises(ValueError, match="divisible by heads"):
        build_propagator("gat", 4, 3, 2, hidden=6, heads=4)
    assert build_propagator("none", 4, 3, 2, num_layers=5).num_layers == 0


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn", "none"])
def test_batched_training_equals_each_image_alone(name):
    images, offsets = make_images(SIZES)
    batched, logits, hidden = run_grid(name, images, offsets, [0, 1])
    height, width = 5, 7
    assert logits.shape == (2, height * width, NUM_CLASSES)
    assert hidden.shape == (2, height * width, 16)
    # Image 0 (5 x 6) leaves the last column of the 5 x 7 canvas as padding.
    assert torch.equal(logits[0].view(height, width, -1)[:, 6], torch.zeros(height, NUM_CLASSES))
    for index in range(2):
        (alone,), _, _ = run_grid(name, images, offsets, [index])
        assert alone.abs().max() > 0.05
        torch.testing.assert_close(batched[index], alone, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn"])
def test_edge_layout_equals_grid_layout(name):
    images, offsets = make_images(SIZES)
    grid_crops, _, _ = run_grid(name, images, offsets, [0, 1], steps=3)
    x, edge_index, edge_weight, node_mask, seeds = edge_batch(images, offsets)
    model = build_propagator(name, IN_CHANNELS, NUM_CLASSES, 2, generators([0, 1]), hidden=16)
    logits, _ = train(model, lambda m: m(x, edge_index, edge_weight, node_mask), seeds, steps=3)
    for index, (features, _, _) in enumerate(images):
        height, width = features.shape[1:]
        torch.testing.assert_close(logits[index, :height * width].view(height, width, -1),
                                   grid_crops[index], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn"])
def test_propagators_mix_neighbours_and_none_does_not(name):
    images, offsets = make_images(SIZES[:1])
    x, grid_weight, _ = grid_batch(images)
    changed = x.clone()
    changed[0, :, 0, 0] += 5.0  # change one node's features
    for kind, mixes in ((name, True), ("none", False)):
        model = build_propagator(kind, IN_CHANNELS, NUM_CLASSES, 1, generators([0]), hidden=16)
        model.eval()
        before, _ = model(x, grid_weight=grid_weight, offsets=offsets)
        after, _ = model(changed, grid_weight=grid_weight, offsets=offsets)
        # Node (2, 2) is 2 steps from (0, 0): inside the radius-2 window.
        far_node = 2 * x.shape[-1] + 2
        assert torch.allclose(before[0, far_node], after[0, far_node]) != mixes
        assert not torch.allclose(before[0, 0], after[0, 0])


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn", "none"])
def test_gradients_reach_every_parameter(name):
    images, offsets = make_images(SIZES)
    x, grid_weight, seeds = grid_batch(images)
    model = build_propagator(name, IN_CHANNELS, NUM_CLASSES, 2, generators([0, 1]), hidden=16)
    logits, _ = model(x, grid_weight=grid_weight, offsets=offsets)
    sum(F.cross_entropy(logits[b], seeds[b], ignore_index=IGNORE) for b in range(2)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, parameter_name


def test_per_image_models_differ_and_follow_generators():
    first = build_propagator("gcn", 6, 3, 2, generators([0, 1]), hidden=8)
    again = build_propagator("gcn", 6, 3, 2, generators([0, 1]), hidden=8)
    other = build_propagator("gcn", 6, 3, 1, generators([1]), hidden=8)
    for name, parameter in first.named_parameters():
        assert not torch.equal(parameter[0], parameter[1]), name
        assert torch.equal(parameter, dict(again.named_parameters())[name]), name
        assert torch.equal(parameter[1], dict(other.named_parameters())[name][0]), name


# --------------------------------------------------------------------------------------------
# The batched layers compute what the PyG layers compute, image by image.
# --------------------------------------------------------------------------------------------

def random_graph(num_nodes, generator):
    """A random directed graph: random weights, some self loops present, some missing."""
    pairs = torch.randperm(num_nodes * num_nodes, generator=generator)[:num_nodes * 3]
    edge_index = torch.stack([pairs % num_nodes, pairs // num_nodes])
    edge_weight = 0.05 + torch.rand(edge_index.shape[1], generator=generator, dtype=torch.float64)
    return edge_index, edge_weight


def pyg_image_model(model, index, x, edge_index, edge_weight):
    """Image ``index`` of a BatchedBaseline run with PyG layers holding its weights."""
    h = F.relu(x @ model.embedding_weight[index])
    hidden = model.hidden
    for layer in range(model.num_layers):
        if model.kind == "gcn":
            conv = GCNConv(hidden, hidden, bias=False).double()
            conv.lin.weight.data.copy_(model.layer_weight[index, layer].t())
            h = conv(h, edge_index, edge_weight)
        elif model.kind == "gat":
            heads = model.heads
            conv = GATConv(hidden, hidden // heads, heads=heads, edge_dim=1, bias=False).double()
            conv.lin.weight.data.copy_(model.layer_weight[index, layer].t())
            conv.att_src.data.copy_(model.attention_source[index, layer].unsqueeze(0))
            conv.att_dst.data.copy_(model.attention_target[index, layer].unsqueeze(0))
            conv.lin_edge.weight.data.copy_(model.edge_weight_projection[index, layer].unsqueeze(1))
            conv.att_edge.data.copy_(model.attention_edge[index, layer].unsqueeze(0))
            h = conv(h, edge_index, edge_weight.unsqueeze(1))
        else:
            conv = AGNNConv().double()
            conv.beta.data.copy_(model.attention_beta[index, layer].reshape(1))
            h = conv(h, edge_index)
        if model.kind in ("gcn", "gat") and layer < model.num_layers - 1:
            h = F.relu(h)
    return h @ model.output_weight[index], h


@pytest.mark.parametrize("name", ["gcn", "gat", "agnn"])
def test_batched_layers_equal_the_pyg_layers(name):
    generator = torch.Generator().manual_seed(5)
    counts, channels = [9, 14, 11], 6
    num_nodes = max(counts)
    options = {"heads": 2} if name == "gat" else {}
    model = build_propagator(name, channels, 3, len(counts), generators([0, 1, 2]), hidden=8,
                             dropout=0.0, **options).double()
    with torch.no_grad():  # beta = 1 at initialisation: make the per-image values differ
        if name == "agnn":
            model.attention_beta.uniform_(0.5, 3.0, generator=generator)
    x = torch.zeros(len(counts), num_nodes, channels, dtype=torch.float64)
    node_mask = torch.zeros(len(counts), num_nodes, dtype=torch.bool)
    graphs, edge_index, edge_weight = [], [], []
    for index, count in enumerate(counts):
        x[index, :count] = torch.rand(count, channels, generator=generator, dtype=torch.float64)
        node_mask[index, :count] = True
        edges, weights = random_graph(count, generator)
        graphs.append((edges, weights))
        edge_index.append(edges + index * num_nodes)
        edge_weight.append(weights)
    x.requires_grad_(True)
    logits, hidden = model(x, torch.cat(edge_index, 1), torch.cat(edge_weight), node_mask)
    upstream = torch.randn(logits.shape, generator=generator, dtype=torch.float64)
    grad_x, = torch.autograd.grad((logits * upstream).sum(), x)
    for index, (count, (edges, weights)) in enumerate(zip(counts, graphs)):
        nodes = x[index, :count].detach().clone().requires_grad_(True)
        expected_logits, expected_hidden = pyg_image_model(model, index, nodes, edges, weights)
        torch.testing.assert_close(logits[index, :count], expected_logits, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(hidden[index, :count], expected_hidden, rtol=1e-10,
                                   atol=1e-10)
        expected_grad, = torch.autograd.grad((expected_logits * upstream[index, :count]).sum(),
                                             nodes)
        torch.testing.assert_close(grad_x[index, :count], expected_grad, rtol=1e-9, atol=1e-10)
        assert torch.equal(logits[index, count:], torch.zeros_like(logits[index, count:]))
