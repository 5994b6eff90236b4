"""Tests for graphwsss.postprocess.crf: DenseCRF on synthetic images, the box constraint."""

import builtins

import numpy as np
import pytest
import torch

from graphwsss.data import Box
from graphwsss.postprocess import clear_outside_boxes, dense_crf
from graphwsss.postprocess import crf as crf_module

V = 255
HEIGHT, WIDTH, EDGE = 32, 48, 24


def two_colour_image():
    """Red left of column EDGE, blue from it on."""
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[:, :EDGE] = (220, 30, 30)
    image[:, EDGE:] = (30, 30, 220)
    return image


def ramp_probs(boundary, scale):
    """Two-class probabilities whose class-1 boundary is a soft ramp at column ``boundary``."""
    right = 1 / (1 + np.exp(-(np.arange(WIDTH) - boundary) / scale))
    right = np.broadcast_to(right, (HEIGHT, WIDTH))
    return np.ascontiguousarray(np.stack([1 - right, right]), dtype=np.float32)


def boundary_columns(probs):
    """The first class-1 column of each row."""
    return (probs.argmax(0) == 1).argmax(axis=1)


def test_confident_prediction_is_kept():
    image = two_colour_image()
    probs = np.empty((2, HEIGHT, WIDTH), dtype=np.float64)
    probs[1] = np.where(np.arange(WIDTH) >= EDGE, 0.95, 0.05)
    probs[0] = 1 - probs[1]
    refined = dense_crf(image, probs)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_array_equal(refined.argmax(0), probs.argmax(0))
    np.testing.assert_allclose(refined.sum(0), 1, atol=1e-4)
    assert refined.max(0).min() > 0.9


@pytest.mark.parametrize("boundary", [17, 31])
def test_blurred_boundary_snaps_to_image_edge(boundary):
    image = two_colour_image()
    probs = ramp_probs(boundary, scale=3.0)
    before = np.abs(boundary_columns(probs) - EDGE).mean()
    after = np.abs(boundary_columns(dense_crf(image, probs)) - EDGE).mean()
    assert before >= 6 and after <= 1


def test_non_contiguous_and_float64_inputs_are_handled():
    image = np.ascontiguousarray(two_colour_image()[:, ::-1, ::-1])[:, ::-1]  # a strided view
    probs = ramp_probs(20, 3.0).astype(np.float64)[:, :, ::-1][:, :, ::-1]
    assert not image.flags.c_contiguous
    refined = dense_crf(image, probs, iterations=2)
    assert refined.shape == (2, HEIGHT, WIDTH)


def test_zero_iterations_is_the_normalised_unary():
    probs = ramp_probs(20, 3.0)
    np.testing.assert_allclose(dense_crf(two_colour_image(), probs, iterations=0), probs,
                               atol=1e-5)


def test_bad_inputs_raise():
    image = two_colour_image()
    with pytest.raises(ValueError, match=r"\[K, H, W\]"):
        dense_crf(image, np.ones((2, HEIGHT, WIDTH + 1), np.float32))
    with pytest.raises(TypeError, match="np.ndarray"):
        dense_crf(image, torch.ones(2, HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(image.astype(np.float32), ramp_probs(20, 3.0))


def test_missing_pydensecrf_gives_clear_import_error(monkeypatch):
    real_import = builtins.__import__

    def no_densecrf(name, *args, **kwargs):
        if name.startswith("pydensecrf"):
            raise ImportError("No module named 'pydensecrf'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_densecrf)
    with pytest.raises(ImportError, match="pydensecrf2"):
        crf_module.dense_crf(two_colour_image(), ramp_probs(20, 3.0))


BOXES = [Box(0, 0, 3, 2, 1), Box(2, 1, 4, 3, 2)]


@pytest.mark.parametrize("as_tensor", [False, True])
def test_clear_outside_boxes_probabilities(as_tensor):
    probs = np.zeros((4, 3, 4), dtype=np.float32)
    probs[0] = 0.1
    probs[1] = 0.5        # class 1 everywhere, box 1 only at rows 0..1, cols 0..2
    probs[2] = 0.4        # class 2, box 2 at rows 1..2, cols 2..3
    probs[3, 2, 0] = 1.0  # class 3 has no box; this pixel keeps nothing but becomes background
    probs[:, 2, 0] = [0, 0, 0, 1]
    values = torch.from_numpy(probs) if as_tensor else probs
    cleared = clear_outside_boxes(values, BOXES)
    assert type(cleared) is type(values) and cleared.dtype == values.dtype
    cleared = cleared.numpy() if as_tensor else cleared
    np.testing.assert_allclose(cleared.sum(0), 1, atol=1e-6)
    assert (cleared[3] == 0).all()
    np.testing.assert_allclose(cleared[:, 2, 0], [1, 0, 0, 0])
    # (0, 0): in box 1 only -> background 0.1 and class 1 0.5, renormalised.
    np.testing.assert_allclose(cleared[:, 0, 0], [0.1 / 0.6, 0.5 / 0.6, 0, 0], rtol=1e-6)
    # (1, 2): in both boxes -> all three kept.
    np.testing.assert_allclose(cleared[:, 1, 2], [0.1, 0.5, 0.4, 0], rtol=1e-6)
    # (2, 3): in box 2 only.
    np.testing.assert_allclose(cleared[:, 2, 3], [0.2, 0, 0.8, 0], rtol=1e-6)
    assert (probs[3, 2, 0] == 1.0)   # the input is untouched


@pytest.mark.parametrize("as_tensor", [False, True])
def test_clear_outside_boxes_labels(as_tensor):
    label = np.array([[1, 1, 2, 2],
                      [1, V, 1, 2],
                      [2, 0, 2, 1]], dtype=np.uint8)
    expected = np.array([[1, 1, 0, 0],
                         [1, V, 1, 2],
                         [0, 0, 2, 0]], dtype=np.uint8)
    values = torch.from_numpy(label) if as_tensor else label
    cleared = clear_outside_boxes(values, BOXES)
    cleared = cleared.numpy() if as_tensor else cleared
    np.testing.assert_array_equal(cleared, expected)
    assert label[0, 2] == 2


def test_clear_outside_boxes_rejects_unknown_class():
    with pytest.raises(ValueError, match="class id"):
        clear_outside_boxes(np.ones((2, 3, 4), np.float32), BOXES)
