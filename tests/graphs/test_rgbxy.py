"""Tests for graphwsss.graphs.rgbxy: the RGB-XY Gaussian kernel (3.12) and its radius graph."""

import math

import pytest
import torch

from graphwsss.graphs import (RGBXYGraphBuilder, build_graph_builder, downsample_image,
                              edges_to_grid, neighbor_valid, radius_offsets, rgbxy_kernel)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_kernel_matches_per_pair_loops():
    h, w = 5, 4
    generator = torch.Generator().manual_seed(0)
    colours = torch.rand(3, h, w, generator=generator, dtype=torch.float64) * 0.3
    offsets = radius_offsets(2, "square")
    sigma_xy, sigma_rgb = 2.0, 0.15
    kernel = rgbxy_kernel(colours, offsets, sigma_xy=sigma_xy, sigma_rgb=sigma_rgb)
    assert kernel.shape == (offsets.shape[0], h, w)
    for o, (dy, dx) in enumerate(offsets.tolist()):
        for y in range(h):
            for x in range(w):
                expected = 0.0
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    rgb = sum(float(colours[c, y, x] - colours[c, y + dy, x + dx]) ** 2
                              for c in range(3))
                    expected = math.exp(-(dy * dy + dx * dx) / (2 * sigma_xy**2)
                                        - rgb / (2 * sigma_rgb**2))
                assert float(kernel[o, y, x]) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_kernel_batched_equals_per_image_and_is_differentiable():
    generator = torch.Generator().manual_seed(1)
    colours = torch.rand(3, 3, 9, 7, generator=generator, dtype=torch.float64)
    offsets = radius_offsets(3)
    batched = rgbxy_kernel(colours, offsets)
    assert batched.shape == (3, offsets.shape[0], 9, 7)
    for b in range(3):
        assert torch.equal(batched[b], rgbxy_kernel(colours[b], offsets))
    leaf = (colours[0, :, :4, :3] * 0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: rgbxy_kernel(c, offsets), (leaf,))


def test_kernel_on_uniform_colour_is_spatial_gaussian():
    offsets = radius_offsets(4)
    kernel = rgbxy_kernel(torch.full((3, 10, 10), 0.3), offsets)
    spatial = torch.exp(-(offsets.float() ** 2).sum(1) / 72.0).view(-1, 1, 1)
    valid = neighbor_valid(10, 10, offsets)
    torch.testing.assert_close(kernel, torch.where(valid, spatial.expand_as(kernel), 0.0))
    assert torch.all(kernel[0] == 1)


@pytest.mark.parametrize("device", DEVICES)
def test_builder_voc_size(device):
    h, w, channels = 63, 47, 64
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(3, 500, 375, generator=generator).to(device)
    features = torch.rand(channels, h, w, generator=generator).to(device)
    seeds = torch.randint(0, 3, (h, w), generator=generator).to(device)
    builder = build_graph_builder("rgbxy")
    assert isinstance(builder, RGBXYGraphBuilder) and builder.name == "rgbxy"
    data = builder.build(image, features, seed_labels=seeds)
    offsets = radius_offsets(4, device=device)
    # cell means of uniform noise are ~0.5 +- 0.04: every pair is above the threshold
    assert data.edge_index.shape[1] == int(neighbor_valid(h, w, offsets).sum()) == 136397
    expected = rgbxy_kernel(downsample_image(image, h, w), offsets)
    torch.testing.assert_close(data.grid_weight, expected)
    assert torch.equal(edges_to_grid(data.edge_index, data.edge_attr, data.offsets, h, w),
                       data.grid_weight)
    for value in (data.x, data.y, data.pos, data.edge_index, data.edge_attr, data.grid_weight):
        assert value.device.type == torch.device(device).type
    torch.testing.assert_close(data.x.sum(1), torch.ones(h * w, device=device))
    assert torch.equal(data.y, seeds.flatten())
    assert data.grid_shape == (h, w)


def test_builder_cuts_colour_edges_and_ignores_embedding():
    h, w = 6, 8
    image = torch.zeros(3, 8 * h, 8 * w)
    image[:, :, 8 * 5:] = 1.0                      # grid columns >= 5 are white, the rest black
    features = torch.rand(4, h, w)
    builder = RGBXYGraphBuilder(radius=3)
    data = builder.build(image, features)
    source, target = data.edge_index
    assert torch.all((source % w >= 5) == (target % w >= 5))
    loops = source == target
    assert int(loops.sum()) == h * w and torch.all(data.edge_attr[loops] == 1)
    dy = torch.div(source, w, rounding_mode="floor") - torch.div(target, w, rounding_mode="floor")
    dx = source % w - target % w
    torch.testing.assert_close(data.edge_attr, torch.exp(-(dy**2 + dx**2).float() / 72.0))
    with_embedding = builder.build(image, features, embedding=torch.rand(5, h, w))
    assert torch.equal(with_embedding.edge_index, data.edge_index)


def test_invalid_options():
    with pytest.raises(ValueError):
        RGBXYGraphBuilder(sigma_rgb=0.0)
    with pytest.raises(ValueError):
        rgbxy_kernel(torch.rand(3, 4), radius_offsets(1))
