import math

import pytest
import torch

from graphwsss.graphs import radius_offsets
from graphwsss.losses.affinity import (affinity_classification_loss, affinity_loss,
                                       affinity_pair_masks, affinity_regularization)


def test_pair_masks_label_pairs_by_their_seeds():
    seeds = torch.tensor([[[0, 0, 1, 255]]])                 # one row: bg bg fg unknown
    offsets = torch.tensor([[0, 1]])                          # right neighbour
    background, foreground, negative = affinity_pair_masks(seeds, offsets)
    assert background[0, 0, 0].tolist() == [True, False, False, False]
    assert foreground[0, 0, 0].tolist() == [False, False, False, False]
    assert negative[0, 0, 0].tolist() == [False, True, False, False]   # 0-1; 1-255 unknown
    seeds = torch.tensor([[[2, 2, 3]]])
    _, foreground, negative = affinity_pair_masks(seeds, offsets)
    assert foreground[0, 0, 0].tolist() == [True, False, False]
    assert negative[0, 0, 0].tolist() == [False, True, False]          # last: outside the grid


def test_classification_loss_weights_the_three_pair_sets():
    seeds = torch.tensor([[[0, 0, 1, 1, 2]]])
    offsets = torch.tensor([[0, 1]])
    affinity = torch.tensor([[[[0.5, 0.2, 0.8, 0.1, 0.9]]]])
    # pairs: (0,0) bg+ D=.5; (0,1) neg D=.2; (1,1) fg+ D=.8; (1,2) neg D=.1; last outside.
    expected = (-math.log(0.5) / 4 - math.log(0.8) / 4
                + (-math.log(1 - 0.2) - math.log(1 - 0.1)) / 2 / 2)
    value = affinity_classification_loss(affinity, seeds, offsets)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_classification_loss_is_zero_without_known_pairs():
    seeds = torch.full((1, 3, 3), 255)
    offsets = radius_offsets(1, "square")
    offsets = offsets[(offsets != 0).any(1)]
    affinity = torch.rand(1, offsets.shape[0], 3, 3)
    assert affinity_classification_loss(affinity, seeds, offsets).item() == 0.0


def test_regularization_matches_a_loop_over_pairs():
    torch.manual_seed(0)
    embedding = torch.rand(1, 5, 4, 6, dtype=torch.float64)
    image = torch.rand(1, 3, 4, 6, dtype=torch.float64)
    offsets = radius_offsets(2, "disc")
    offsets = offsets[(offsets != 0).any(1)]
    from graphwsss.graphs import embedding_distance
    distance = embedding_distance(embedding, offsets)
    value = affinity_regularization(distance, image, offsets, sigma_xy=3.0, sigma_rgb=0.5)
    total, count = 0.0, 0
    for y in range(4):
        for x in range(6):
            for dy, dx in offsets.tolist():
                v, u = y + dy, x + dx
                if 0 <= v < 4 and 0 <= u < 6:
                    kernel = math.exp(-(dy * dy + dx * dx) / (2 * 9.0)
                                      - float(((image[0, :, y, x] - image[0, :, v, u]) ** 2).sum())
                                      / (2 * 0.25))
                    total += kernel * float((embedding[0, :, y, x] - embedding[0, :, v, u]).abs().sum()) / 5
                    count += 1
    assert value.item() == pytest.approx(total / count, rel=1e-9)


def test_affinity_loss_trains_the_embedding_towards_the_seeds():
    torch.manual_seed(0)
    seeds = torch.zeros(1, 6, 6, dtype=torch.long)
    seeds[:, :, 3:] = 1
    image = torch.zeros(1, 3, 6, 6)
    image[:, :, :, 3:] = 1.0
    embedding = torch.randn(1, 8, 6, 6, requires_grad=True)
    offsets = radius_offsets(2, "disc")
    optimizer = torch.optim.Adam([embedding], lr=0.1)
    first = None
    for _ in range(60):
        loss, logs = affinity_loss(embedding, seeds, image, offsets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.3 * first
    assert set(logs) == {"classification", "regularization"}


def test_valid_mask_drops_pairs_touching_padding():
    embedding = torch.rand(1, 4, 3, 4)
    image = torch.rand(1, 3, 3, 4)
    offsets = torch.tensor([[0, 1]])
    from graphwsss.graphs import embedding_distance
    distance = embedding_distance(embedding, offsets)
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    valid[..., 3] = False
    masked = affinity_regularization(distance, image, offsets, valid_mask=valid)
    cropped = affinity_regularization(embedding_distance(embedding[..., :3], offsets),
                                      image[..., :3], offsets)
    assert masked.item() == pytest.approx(cropped.item(), rel=1e-5)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="affinity"):
        affinity_classification_loss(torch.rand(2, 3), torch.zeros(1, 2, 2, dtype=torch.long),
                                     torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="integer"):
        affinity_pair_masks(torch.zeros(1, 2, 2), torch.tensor([[0, 1]]))
