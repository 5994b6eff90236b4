"""Tests for graphwsss.losses.consistency (consistency checking, eqs. 3.27–3.28)."""

import pytest
import torch

from graphwsss.losses import consistency_check, select_multi_points

V = 255

# 3x4 grid, 2-d hidden features given per node (row-major, node = row * 4 + col).
# Box of class 1: cols 0..2, rows 0..1 (x0=0, y0=0, x1=3, y1=2); selected nodes 0 and 1,
# features [1, 1] and [1, -1] -> prototype [1, 0].
FEATURES = {
    0: [1.0, 1.0],    # selected, seed 1, cos > 0: kept
    1: [1.0, -1.0],   # selected, seed 1, cos > 0: kept
    2: [-1.0, 0.5],   # seed 1, cos < 0: removed
    4: [0.0, 1.0],    # seed 1, cos = 0: removed (<= 0)
    5: [0.2, -3.0],   # seed 1, cos > 0: kept
    6: [-1.0, 0.0],   # seed 2 inside the box, anti-aligned: other class, kept
    3: [-1.0, 0.0],   # seed 1 outside the box (col 3), anti-aligned: kept
    8: [-1.0, -1.0],  # seed 1 outside the box (row 2): kept
    9: [-2.0, 0.0],   # background seed outside: kept
}
SEEDS = torch.tensor([[1, 1, 1, 1],
                      [1, 1, 2, V],
                      [1, 0, V, V]])
EXPECTED = torch.tensor([[1, 1, V, 1],
                         [V, 1, 2, V],
                         [1, 0, V, V]])
BOXES = torch.tensor([[0, 0, 3, 2]])
CLASSES = torch.tensor([1])
SELECTED = [torch.tensor([0, 1])]


def _hidden():
    hidden = torch.zeros(12, 2)
    for node, feature in FEATURES.items():
        hidden[node] = torch.tensor(feature)
    return hidden.t().reshape(2, 3, 4)


def test_removes_exactly_the_anti_aligned_seeds_of_the_box_class():
    seeds = SEEDS.clone()
    new_seeds = consistency_check(_hidden(), seeds, BOXES, CLASSES, SELECTED)
    assert torch.equal(new_seeds, EXPECTED)
    assert torch.equal(seeds, SEEDS)              # the input is not modified


def test_keeps_dtype_and_persists_when_applied_again():
    seeds = SEEDS.to(torch.uint8)
    once = consistency_check(_hidden(), seeds, BOXES, CLASSES, SELECTED)
    assert once.dtype == torch.uint8
    assert torch.equal(once.long(), EXPECTED)
    twice = consistency_check(_hidden(), once, BOXES, CLASSES, SELECTED)
    assert torch.equal(twice, once)


def test_uses_the_prototype_of_the_selected_nodes():
    # With node 2 (feature [-1, 0.5]) as the only selected node the prototype is [-1, 0.5]:
    # nodes 0, 1 and 5 now point away from it and are removed; nodes 2 and 4 are kept.
    new_seeds = consistency_check(_hidden(), SEEDS, BOXES, CLASSES, [torch.tensor([2])])
    prototype = torch.tensor([-1.0, 0.5])
    for node in (0, 1, 2, 4, 5):
        feature = torch.tensor(FEATURES[node])
        removed = torch.dot(feature, prototype) <= 0
        assert new_seeds.view(-1)[node].item() == (V if removed else 1), node
    assert [new_seeds.view(-1)[node].item() for node in (0, 1, 2, 4, 5)] == [V, V, 1, 1, V]
    assert new_seeds.view(-1)[6].item() == 2


def test_no_gradient_and_works_with_selection_output():
    hidden = _hidden().requires_grad_(True)
    probs = torch.zeros(3, 3, 4)
    probs[1] = 1.0
    selected = select_multi_points(probs, BOXES, CLASSES)
    new_seeds = consistency_check(hidden, SEEDS, BOXES, CLASSES, selected)
    assert not new_seeds.requires_grad
    # Uniform scores: ties select the box's left column (0, 4) and top row (0, 1, 2).
    assert selected[0].tolist() == [0, 1, 2, 4]
    # Prototype = mean([1, 1], [1, -1], [-1, 0.5], [0, 1]) = [0.25, 0.375]: nodes 1, 2, 5 have
    # negative dot products and are removed; 0 and 4 are kept.
    assert torch.equal(new_seeds, torch.tensor([[1, V, V, 1],
                                                [1, V, 2, V],
                                                [1, 0, V, V]]))


def test_no_boxes_returns_a_copy():
    new_seeds = consistency_check(_hidden(), SEEDS, torch.zeros(0, 4, dtype=torch.long),
                                  torch.zeros(0, dtype=torch.long), [])
    assert torch.equal(new_seeds, SEEDS) and new_seeds.data_ptr() != SEEDS.data_ptr()


def test_shape_errors():
    with pytest.raises(ValueError):
        consistency_check(_hidden(), SEEDS[:2], BOXES, CLASSES, SELECTED)
    with pytest.raises(ValueError):
        consistency_check(_hidden(), SEEDS, BOXES, CLASSES, [])
    with pytest.raises(ValueError):
        consistency_check(_hidden(), SEEDS, torch.tensor([[0, 0, 5, 2]]), CLASSES, SELECTED)


def test_background_rule_unlabels_seeds_closer_to_the_background():
    """rule="background": a box seed goes when cos to the background prototype >= cos to the
    box prototype; non-negative features (where 3.28 cannot fire) still get checked."""
    hidden = torch.tensor([[1.0, 0.9, 0.1, 0.0],      # feature 0: "object"
                           [0.0, 0.2, 1.0, 1.0]])    # feature 1: "background"
    hidden = hidden.reshape(2, 1, 4)
    seeds = torch.tensor([[1, 1, 1, 0]])
    boxes, classes, selected = torch.tensor([[0, 0, 3, 1]]), torch.tensor([1]), [torch.tensor([0])]
    reference = consistency_check(hidden, seeds, boxes, classes, selected)
    assert torch.equal(reference, seeds)                        # every cosine >= 0: no removal
    kept = consistency_check(hidden, seeds, boxes, classes, selected, rule="background")
    assert kept.tolist() == [[1, 1, V, 0]]
    no_background = consistency_check(hidden, torch.tensor([[1, 1, 1, V]]), boxes, classes,
                                      selected, rule="background")
    assert no_background.tolist() == [[1, 1, 1, V]]
    with pytest.raises(ValueError, match="rule"):
        consistency_check(hidden, seeds, boxes, classes, selected, rule="other")
