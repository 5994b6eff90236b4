"""Tests for graphwsss.utils.shapes: the one shape-check helper of the package."""

import numpy as np
import pytest
import torch

from graphwsss.utils.shapes import check_shape, describe


def test_describe_names_dtype_and_shape():
    assert describe(torch.zeros(2, 3, dtype=torch.int64)) == "torch.int64 tensor of shape (2, 3)"
    assert describe(np.zeros((4,), np.float32)) == "float32 array of shape (4,)"
    assert describe([1, 2]) == "list"


def test_check_shape_accepts_and_returns_a_fitting_tensor():
    value = torch.zeros(2, 5, 6)
    assert check_shape("valid", value, "[B, h, w]", shape=(2, None, 6), dtype="float") is value
    check_shape("labels", torch.zeros(3, dtype=torch.long), "[N]", dims=1, dtype="integer")
    check_shape("mask", torch.zeros(1, dtype=torch.bool), "[N]", dims=1, dtype="bool")


@pytest.mark.parametrize("value, options, message", [
    (torch.zeros(2, 3), {"dims": 3}, "x must be a [K, h, w] tensor, got torch.float32 tensor of "
                                     "shape (2, 3)"),
    (torch.zeros(2, 3, 4), {"shape": (2, 4, None)}, "x must be a [K, h, w] tensor"),
    (torch.zeros(2, 3, 4, dtype=torch.long), {"dims": 3, "dtype": "float"},
     "x must be a float [K, h, w] tensor"),
    (torch.zeros(2, 3, 4), {"dims": 3, "dtype": "integer"}, "x must be an integer [K, h, w]"),
    (torch.zeros(2, 3, 4, dtype=torch.bool), {"dims": 3, "dtype": "integer"}, "an integer"),
    ([1, 2], {}, "x must be a [K, h, w] tensor, got list"),
])
def test_check_shape_errors_name_the_argument_and_what_came(value, options, message):
    with pytest.raises(ValueError) as error:
        check_shape("x", value, "[K, h, w]", **options)
    assert message in str(error.value)
