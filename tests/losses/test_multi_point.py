"""Tests for graphwsss.losses.multi_point (L_mp, eqs. 3.23–3.26, and boxes_to_grid)."""

import math

import pytest
import torch

from graphwsss.data import Box
from graphwsss.losses import boxes_to_grid, multi_point_loss, select_multi_points


def _boxes(*rows):
    boxes = torch.tensor([row[:4] for row in rows], dtype=torch.long).reshape(-1, 4)
    return boxes, torch.tensor([row[4] for row in rows], dtype=torch.long)


# ---------------------------------------------------------------- selection (3.23–3.24)

def test_selection_per_row_and_column_on_hand_made_map():
    # 4x5 grid, class 1 scores; box A = cols 1..3, rows 0..2 (x0=1, y0=0, x1=4, y1=3).
    # Cells outside box A score 0.99 so that a selection leaking out of the box would show.
    score = torch.full((4, 5), 0.99)
    score[0:3, 1:4] = torch.tensor([[0.10, 0.90, 0.20],
                                    [0.80, 0.30, 0.75],
                                    [0.50, 0.60, 0.70]])
    probs = torch.stack([1 - score, score])
    # Rows: row 0 -> col 2 (node 2), row 1 -> col 1 (node 6), row 2 -> col 3 (node 13).
    # Cols: col 1 -> row 1 (node 6), col 2 -> row 0 (node 2), col 3 -> row 1 (node 8).
    # Box B = class 0 on row 3, cols 0..1: a one-row box selects each of its cells by column.
    boxes, classes = _boxes((1, 0, 4, 3, 1), (0, 3, 2, 4, 0))
    selected = select_multi_points(probs, boxes, classes)
    assert len(selected) == 2
    assert selected[0].tolist() == [2, 6, 8, 13]
    assert selected[1].tolist() == [15, 16]
    assert all(s.dtype == torch.long for s in selected)


def test_selection_ties_take_first_and_single_cell_box():
    probs = torch.full((3, 4, 5), 1 / 3)
    boxes, classes = _boxes((1, 1, 4, 3, 2), (4, 3, 5, 4, 1))
    selected = select_multi_points(probs, boxes, classes)
    # Rows pick the box's left column (1, 1), (2, 1); columns its top row (1, 1..3).
    assert selected[0].tolist() == sorted({6, 11, 6, 7, 8})
    assert selected[1].tolist() == [19]


def test_selection_carries_no_gradient_and_validates_boxes():
    probs = torch.rand(2, 3, 3, requires_grad=True)
    boxes, classes = _boxes((0, 0, 3, 3, 1))
    (nodes,) = select_multi_points(probs, boxes, classes)
    assert not nodes.requires_grad
    assert select_multi_points(probs, *_boxes()) == []
    for bad in [(0, 0, 4, 3, 1), (2, 0, 2, 3, 1), (0, 0, 3, 3, 2)]:
        with pytest.raises(ValueError):
            select_multi_points(probs, *_boxes(bad))
    with pytest.raises(ValueError):
        select_multi_points(probs, torch.zeros(1, 3, dtype=torch.long), classes)


# ---------------------------------------------------------------- loss (3.25–3.26)

LN2, LN3 = math.log(2), math.log(3)
# 2x3 grid, K = 2. Box A: row 0, class 1 (one-row box: all three cells selected).
# Box B: row 1 cols 0..1, class 0 (cells 3, 4 selected). Cell 5 is in no box.
LOGITS = torch.tensor([[[0.0, 0.0, LN3], [0.0, LN3, 5.0]],
                       [[0.0, LN3, 0.0], [0.0, 0.0, -5.0]]])
HIDDEN = torch.tensor([[[1.0, 0.0, 1.0], [1.0, -1.0, 3.0]],
                       [[0.0, 1.0, 1.0], [0.0, 0.0, 2.0]]])
BOXES, CLASSES = _boxes((0, 0, 3, 1, 1), (0, 1, 2, 2, 0))
# Cross-entropy: node 0 ln 2, node 1 ln(4/3), node 2 ln 4 (class 1); node 3 ln 2, node 4
# ln(4/3) (class 0). Pairs: A (0,1) 1 - 0, (0,2) and (1,2) 1 - 1/sqrt 2; B (3,4) 1 - (-1).
EXPECTED_CE = (LN2 + math.log(4 / 3) + math.log(4) + LN2 + math.log(4 / 3)) / 5
EXPECTED_COS = (1 + 2 * (1 - 1 / math.sqrt(2)) + 2) / 4


def test_multi_point_loss_by_hand():
    selected = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]
    loss = multi_point_loss(LOGITS, HIDDEN, BOXES, CLASSES, selected)
    assert loss.item() == pytest.approx(EXPECTED_CE + EXPECTED_COS, rel=1e-6)


def test_multi_point_loss_selects_itself_when_not_given():
    assert select_multi_points(torch.softmax(LOGITS, 0), BOXES, CLASSES)[0].tolist() == [0, 1, 2]
    loss = multi_point_loss(LOGITS, HIDDEN, BOXES, CLASSES)
    assert loss.item() == pytest.approx(EXPECTED_CE + EXPECTED_COS, rel=1e-6)


def test_multi_point_gradient_only_through_selected_nodes():
    logits = LOGITS.clone().requires_grad_(True)
    hidden = HIDDEN.clone().requires_grad_(True)
    multi_point_loss(logits, hidden, BOXES, CLASSES).backward()
    assert torch.all(logits.grad[:, 1, 2] == 0) and torch.all(hidden.grad[:, 1, 2] == 0)
    assert logits.grad[:, 0, 0].abs().sum() > 0 and hidden.grad[:, 0, 1].abs().sum() > 0


def test_single_node_box_has_only_cross_entropy():
    boxes, classes = _boxes((0, 0, 1, 1, 1))
    loss = multi_point_loss(LOGITS, HIDDEN, boxes, classes)
    assert loss.item() == pytest.approx(LN2, rel=1e-6)


def test_no_boxes_is_zero_and_backward_works():
    logits = LOGITS.clone().requires_grad_(True)
    hidden = HIDDEN.clone().requires_grad_(True)
    loss = multi_point_loss(logits, hidden, *_boxes())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_multi_point_loss_shape_errors():
    with pytest.raises(ValueError):
        multi_point_loss(LOGITS, HIDDEN[:, :1], BOXES, CLASSES)
    with pytest.raises(ValueError):
        multi_point_loss(LOGITS, HIDDEN, BOXES, CLASSES, selected=[torch.tensor([0])])


# ---------------------------------------------------------------- boxes_to_grid

def test_boxes_to_grid_integer_stride():
    boxes = [Box(0, 0, 96, 64, 3),        # whole image
             Box(9, 17, 23, 30, 1),       # x: floor(9/8)=1, ceil(23/8)=3; y: 2, ceil(30/8)=4
             Box(40, 40, 41, 41, 2),      # one pixel -> its own cell
             Box(95, 63, 96, 64, 5)]      # last pixel -> last cell
    grid, classes = boxes_to_grid(boxes, (64, 96), (8, 12))
    assert grid.dtype == torch.long and classes.dtype == torch.long
    assert grid.tolist() == [[0, 0, 12, 8], [1, 2, 3, 4], [5, 5, 6, 6], [11, 7, 12, 8]]
    assert classes.tolist() == [3, 1, 2, 5]


def test_boxes_to_grid_fractional_stride_and_degenerate():
    # H = 60, h = 8: stride 7.5. Rows 15..16 -> floor(2.0)=2, ceil(2.13)=3; rows 14..15 ->
    # floor(1.87)=1, ceil(2.0)=2 exactly. W = 100, w = 13: x 0..1 -> [0, 1).
    boxes = [Box(0, 15, 1, 16, 1), Box(0, 14, 1, 15, 1), Box(0, 15, 0, 15, 4)]
    grid, _ = boxes_to_grid(boxes, (60, 100), (8, 13))
    assert grid.tolist() == [[0, 2, 1, 3], [0, 1, 1, 2], [0, 2, 1, 3]]   # empty box: one cell
    empty, empty_classes = boxes_to_grid([], (60, 100), (8, 13))
    assert empty.shape == (0, 4) and empty_classes.shape == (0,)
