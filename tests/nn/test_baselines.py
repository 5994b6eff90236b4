import pytest
import torch
import torch.nn.functional as F

from graphwsss.nn.a2gnn import A2GNN
from graphwsss.nn.baselines import PROPAGATORS, BatchedBaseline, build_propagator

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
    for name in ("gcn", "gat", "agnn", "none"):
        model = build_propagator(name, 4, 3, 2, hidden=8)
        assert isinstance(model, BatchedBaseline) and model.kind == name
        assert len(model.models) == 2
    with pytest.raises(ValueError, match="a2gnn, gcn, gat, agnn, none"):
        build_propagator("graphsage", 4, 3, 2)
    with pytest.raises(TypeError):
        build_propagator("gcn", 4, 3, 2, beta=3.0)  # an A2GNN-only option


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


@pytest.mark.parametrize("name", ["gcn", "agnn"])
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
    weight = [model.embedding.weight for model in first.models]
    assert not torch.equal(weight[0], weight[1])
    assert torch.equal(weight[0], again.models[0].embedding.weight)
    assert torch.equal(weight[1], other.models[0].embedding.weight)
