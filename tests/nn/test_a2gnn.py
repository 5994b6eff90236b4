import pytest
import torch
import torch.nn.functional as F

from graphwsss.graphs.grid import grid_to_edges, neighbor_valid, radius_offsets
from graphwsss.nn.a2gnn import A2GNN

IGNORE = 255
SIZES = [(9, 7), (6, 11), (8, 8)]
IN_CHANNELS, NUM_CLASSES = 24, 4


def make_images(sizes=SIZES, offsets=None, seed=0):
    """Random features, random grid graphs (missing edges, self loops) and random seeds."""
    offsets = radius_offsets(2, "disc") if offsets is None else offsets
    generator = torch.Generator().manual_seed(seed)
    images = []
    for height, width in sizes:
        features = torch.rand(IN_CHANNELS, height, width, generator=generator)
        weight = torch.rand(offsets.shape[0], height, width, generator=generator)
        weight = weight * (torch.rand(weight.shape, generator=generator) < 0.7)
        weight[0] = 1.0
        weight = weight * neighbor_valid(height, width, offsets)
        seeds = torch.randint(0, NUM_CLASSES, (height, width), generator=generator)
        seeds[torch.rand(height, width, generator=generator) > 0.3] = IGNORE
        images.append((features, weight, seeds))
    return images, offsets


def pad_to(tensor, height, width, value=0):
    return F.pad(tensor, (0, width - tensor.shape[-1], 0, height - tensor.shape[-2]), value=value)


def grid_batch(images, device="cpu"):
    height = max(image[0].shape[1] for image in images)
    width = max(image[0].shape[2] for image in images)
    x = torch.stack([pad_to(f, height, width) for f, _, _ in images]).to(device)
    grid_weight = torch.stack([pad_to(g, height, width) for _, g, _ in images]).to(device)
    seeds = torch.stack([pad_to(s, height, width, IGNORE) for _, _, s in images]).to(device)
    return x, grid_weight, seeds.flatten(1)


def edge_batch(images, offsets, device="cpu"):
    """The same graphs as one block-diagonal edge list over B * Nmax nodes."""
    counts = [f.shape[1] * f.shape[2] for f, _, _ in images]
    num_nodes = max(counts)
    x = torch.zeros(len(images), num_nodes, IN_CHANNELS)
    seeds = torch.full((len(images), num_nodes), IGNORE, dtype=torch.long)
    node_mask = torch.zeros(len(images), num_nodes, dtype=torch.bool)
    edge_index, edge_weight = [], []
    for index, (features, weight, image_seeds) in enumerate(images):
        count = counts[index]
        x[index, :count] = features.flatten(1).t()
        seeds[index, :count] = image_seeds.reshape(-1)
        node_mask[index, :count] = True
        edges, weights = grid_to_edges(weight, offsets)
        edge_index.append(edges + index * num_nodes)
        edge_weight.append(weights)
    return (x.to(device), torch.cat(edge_index, 1).to(device), torch.cat(edge_weight).to(device),
            node_mask.to(device), seeds.to(device))


def generators(indices, device="cpu"):
    return [torch.Generator(device=device).manual_seed(1000 + 17 * index) for index in indices]


def train(model, run, seeds, steps=20):
    """Adam (lr 0.035, wd 5e-4) on the per-image CE losses summed over images."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.035, weight_decay=5e-4)
    for _ in range(steps):
        logits, _ = run(model)
        loss = sum(F.cross_entropy(logits[b], seeds[b], ignore_index=IGNORE)
                   for b in range(logits.shape[0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return run(model)


def train_grid(images, offsets, indices, form="reference", device="cpu", steps=20):
    x, grid_weight, seeds = grid_batch([images[i] for i in indices], device)
    model = A2GNN(IN_CHANNELS, NUM_CLASSES, len(indices), form=form,
                  generators=generators(indices)).to(device)
    logits, hidden = train(model, lambda m: m(x, grid_weight=grid_weight, offsets=offsets.to(device)),
                           seeds, steps)
    width = x.shape[-1]
    crops = []
    for b, index in enumerate(indices):
        height_b, width_b = images[index][0].shape[1:]
        crops.append(logits[b].view(-1, width, NUM_CLASSES)[:height_b, :width_b].cpu())
    return crops, logits, hidden


@pytest.mark.parametrize("form", ["reference", "paper"])
def test_batched_training_equals_each_image_alone(form):
    images, offsets = make_images()
    batched, _, _ = train_grid(images, offsets, [0, 1, 2], form)
    for index in range(3):
        (alone,), _, _ = train_grid(images, offsets, [index], form)
        assert alone.abs().max() > 0.1
        torch.testing.assert_close(batched[index], alone, rtol=0, atol=1e-4)
    # Training changed something, and the images are not all alike.
    assert not torch.allclose(batched[0][:5, :5], batched[2][:5, :5], atol=1e-3)


def test_edge_path_batched_equals_alone_and_equals_grid_path():
    images, offsets = make_images()
    x, edge_index, edge_weight, node_mask, seeds = edge_batch(images, offsets)
    model = A2GNN(IN_CHANNELS, NUM_CLASSES, 3, generators=generators([0, 1, 2]))
    logits, hidden = train(model, lambda m: m(x, edge_index, edge_weight, node_mask), seeds)
    grid_crops, _, _ = train_grid(images, offsets, [0, 1, 2])
    for index, (features, _, _) in enumerate(images):
        height, width = features.shape[1:]
        count = height * width
        assert torch.equal(logits[index, count:], torch.zeros_like(logits[index, count:]))
        # Same generator stream: the [n, C] dropout masks equal the [h, w, C] ones.
        torch.testing.assert_close(logits[index, :count].view(height, width, -1),
                                   grid_crops[index], rtol=0, atol=1e-4)
        x1, e1, w1, m1, s1 = edge_batch([images[index]], offsets)
        alone = A2GNN(IN_CHANNELS, NUM_CLASSES, 1, generators=generators([index]))
        alone_logits, _ = train(alone, lambda m: m(x1, e1, w1, m1), s1)
        torch.testing.assert_close(logits[index, :count], alone_logits[0], rtol=0, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_batched_training_equals_each_image_alone_cuda():
    images, offsets = make_images()
    batched, _, _ = train_grid(images, offsets, [0, 1, 2], device="cuda")
    on_cpu, _, _ = train_grid(images, offsets, [0, 1, 2])
    for index in range(3):
        (alone,), _, _ = train_grid(images, offsets, [index], device="cuda")
        torch.testing.assert_close(batched[index], alone, rtol=0, atol=1e-4)
        torch.testing.assert_close(batched[index], on_cpu[index], rtol=0, atol=1e-3)


def test_output_shapes_padding_and_hidden():
    images, offsets = make_images()
    x, grid_weight, _ = grid_batch(images)
    model = A2GNN(IN_CHANNELS, NUM_CLASSES, 3, hidden=32, generators=generators([0, 1, 2]))
    logits, hidden = model(x, grid_weight=grid_weight, offsets=offsets)
    height, width = x.shape[-2:]
    assert logits.shape == (3, height * width, NUM_CLASSES)
    assert hidden.shape == (3, height * width, 32)
    logits_grid = logits.view(3, height, width, NUM_CLASSES)
    hidden_grid = hidden.view(3, height, width, 32)
    # Image 0 is 9 x 7 in a 9 x 11 canvas: its padding columns are exactly zero.
    assert torch.equal(logits_grid[0, :, 7:], torch.zeros_like(logits_grid[0, :, 7:]))
    assert hidden_grid[0, :, :7].abs().sum() > 0
    # The logits are the last hidden features times W^{L+1}.
    torch.testing.assert_close(logits, hidden @ model.output_weight)


def test_initialisation_comes_from_the_generators():
    first = A2GNN(10, 3, 2, num_layers=2, generators=generators([0, 1]))
    again = A2GNN(10, 3, 2, num_layers=2, generators=generators([0, 1]))
    single = A2GNN(10, 3, 1, num_layers=2, generators=generators([1]))
    assert first.embedding_weight.shape == (2, 10, 256)
    assert first.attention_weight.shape == (2, 2)
    assert first.output_weight.shape == (2, 256, 3)
    for name, parameter in first.named_parameters():
        assert torch.equal(parameter, dict(again.named_parameters())[name])
        assert torch.equal(parameter[1], dict(single.named_parameters())[name][0])
        assert not torch.equal(parameter[0], parameter[1])
    assert ((first.attention_weight >= 0) & (first.attention_weight <= 1)).all()
    bound = 1 / 10 ** 0.5
    assert first.embedding_weight.abs().max() <= bound
    assert first.embedding_weight.abs().max() > 0.8 * bound


def test_dropout_only_in_training_and_gradients_reach_every_parameter():
    images, offsets = make_images(sizes=[(5, 6)])
    x, grid_weight, seeds = grid_batch(images)
    model = A2GNN(IN_CHANNELS, NUM_CLASSES, 1, generators=generators([0]))
    train_a, _ = model(x, grid_weight=grid_weight, offsets=offsets)
    train_b, _ = model(x, grid_weight=grid_weight, offsets=offsets)
    assert not torch.allclose(train_a, train_b)  # fresh masks each call
    F.cross_entropy(train_a[0], seeds[0], ignore_index=IGNORE).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    model.eval()
    eval_a, _ = model(x, grid_weight=grid_weight, offsets=offsets)
    eval_b, _ = model(x, grid_weight=grid_weight, offsets=offsets)
    assert torch.equal(eval_a, eval_b)


def test_input_validation():
    images, offsets = make_images()
    x, grid_weight, _ = grid_batch(images)
    with pytest.raises(ValueError, match="one generator per image"):
        A2GNN(IN_CHANNELS, NUM_CLASSES, 2, generators=generators([0]))
    with pytest.raises(ValueError, match="form"):
        A2GNN(IN_CHANNELS, NUM_CLASSES, 3, form="x")
    model = A2GNN(IN_CHANNELS, NUM_CLASSES, 3, hidden=8)
    with pytest.raises(ValueError, match="grid_weight and offsets"):
        model(x)
    with pytest.raises(ValueError, match="built for 3 images"):
        model(x[:2], grid_weight=grid_weight[:2], offsets=offsets)
    with pytest.raises(ValueError, match="input channels"):
        model(x[:, :5], grid_weight=grid_weight, offsets=offsets)
    with pytest.raises(ValueError, match="grid_weight must be"):
        model(x, grid_weight=grid_weight[:, :3], offsets=offsets)
    with pytest.raises(ValueError, match="padding"):
        nodes = torch.rand(3, 4, IN_CHANNELS)
        mask = torch.tensor([[True, False, True, False]] * 3)
        model(nodes, torch.tensor([[0], [0]]), None, mask)
