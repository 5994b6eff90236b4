"""The refine stage (docs/method.md §7): saved node probabilities to pseudo labels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from graphwsss.data.palette import read_label_png
from graphwsss.data.records import Box, Point, Sample
from graphwsss.settings import RunSettings
from graphwsss.stages import refine
from graphwsss.stages.paths import RunContext, RunPaths


def _sample(boxes=(), **weak):
    image = np.full((20, 30, 3), 128, np.uint8)
    return Sample(image_id="a", image=image, boxes=list(boxes), **weak)


@pytest.mark.parametrize("size", [(20, 30), (321, 481), (17, 9)])
@pytest.mark.parametrize("stride", [1, 4, 8])
def test_node_stride_recovers_the_grid_stride(size, stride):
    grid = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    found = refine.node_stride(size, grid)
    assert (math.ceil(size[0] / found), math.ceil(size[1] / found)) == grid


def test_node_stride_refuses_a_grid_that_does_not_tile_the_image():
    with pytest.raises(ValueError, match="does not tile a 20x30 image"):
        refine.node_stride((20, 30), (40, 2))


def test_allowed_classes_follow_each_kind_of_weak_label():
    scribble = np.full((20, 30), 255, np.uint8)
    scribble[0, 0], scribble[1, 1] = 3, 0
    assert refine.allowed_classes(_sample([Box(0, 0, 5, 5, 2)]), "box") == [0, 2]
    assert refine.allowed_classes(_sample(scribble=scribble), "scribble") == [0, 3]
    assert refine.allowed_classes(_sample(points=[Point(1, 1, 4)]), "point") == [0, 4]
    assert refine.allowed_classes(_sample(tags=(1, 5)), "image") == [0, 1, 5]
    scribble[1, 1] = 255                # no background stroke, and the data set says none
    assert refine.allowed_classes(_sample(scribble=scribble, no_background=True),
                                  "scribble") == [3]


def test_restriction_clears_classes_the_weak_labels_do_not_name():
    probs = np.full((4, 20, 30), 0.25, np.float32)
    tagged = refine.restrict_to_weak_labels(_sample(tags=(2,)), probs, "image")
    assert (tagged[[1, 3]] == 0).all() and (tagged[[0, 2]] == 0.25).all()
    assert (probs == 0.25).all()                                   # the input is not changed
    boxed = refine.restrict_to_weak_labels(_sample([Box(0, 0, 10, 10, 1)]), probs, "box")
    assert (boxed[1, 10:, :] == 0).all() and (boxed[1, :10, :10] > 0).all()


def test_probabilities_to_label_restricts_before_the_arg_max():
    probs = np.zeros((3, 20, 30), np.float32)
    probs[2] = 0.9                                     # class 2 wins unless it is cleared
    probs[1] = 0.1
    label = refine.probabilities_to_label(np.zeros((20, 30, 3), np.uint8), probs, None)
    assert (label == 2).all()
    cleared = refine.probabilities_to_label(
        np.zeros((20, 30, 3), np.uint8), probs, None,
        lambda values: refine.restrict_to_weak_labels(_sample(tags=(1,)), values, "image"))
    assert (cleared == 1).all() and cleared.dtype == np.uint8


@pytest.fixture
def probability_run(tmp_path, sample_root):
    """A run folder holding only node probabilities for the first sample image."""
    from graphwsss.data.voc import VOCDataset

    dataset = VOCDataset(sample_root)
    image_id = dataset.ids[0]
    sample = dataset.load(image_id)
    grid = (math.ceil(sample.height / 8), math.ceil(sample.width / 8))
    probs = np.zeros((dataset.num_classes, *grid), np.float16)
    probs[0] = 1.0
    box = sample.boxes[0]
    probs[box.class_id, box.y0 // 8:box.y1 // 8, box.x0 // 8:box.x1 // 8] = 2.0
    paths = RunPaths(tmp_path)
    paths.probabilities(image_id).parent.mkdir(parents=True)
    np.save(paths.probabilities(image_id), probs)
    settings = RunSettings()
    settings.crf.enabled = False
    settings.refine.tight_background = 1.0            # reads no seeds
    return RunContext(dataset, paths, settings, torch.device("cpu"), False), image_id, box


def test_run_writes_labels_and_instances_and_skips_finished_images(probability_run):
    ctx, image_id, box = probability_run
    refine.run(ctx, [image_id])
    label = read_label_png(ctx.paths.pseudo_label(image_id))
    assert (label[box.y0 + 8:box.y1 - 8, box.x0 + 8:box.x1 - 8] == box.class_id).all()
    assert ctx.paths.image_file("instances", image_id, ".png").is_file()
    results = json.loads(ctx.paths.image_file("instances", image_id, ".json").read_text())
    assert len(results) == len(ctx.dataset.load(image_id).boxes)
    stamp = ctx.paths.pseudo_label(image_id).stat().st_mtime_ns
    refine.run(ctx, [image_id])                                    # finished: skipped
    assert ctx.paths.pseudo_label(image_id).stat().st_mtime_ns == stamp
    refine.write_collections(ctx, [image_id])
    assert len(json.loads((ctx.paths.instances / "instances.json").read_text())) == len(results)


def test_run_names_missing_probabilities(probability_run):
    ctx, image_id, _ = probability_run
    ctx.paths.probabilities(image_id).unlink()
    with pytest.raises(FileNotFoundError, match="no node probabilities .* run the propagation"):
        refine.run(ctx, [image_id])
    assert not ctx.paths.pseudo_label(image_id).exists()


def test_run_applies_the_tightness_prior_from_the_seeds(probability_run):
    """With ``refine.tight_background`` the unknown pixels of a box whose seeds cross all its
    rows and columns lean to background; the seeds file is read for that."""
    ctx, image_id, box = probability_run
    sample = ctx.dataset.load(image_id)
    ctx.settings.refine.tight_background = 1e6
    seeds = np.zeros((sample.height, sample.width), np.uint8)
    for other in sample.boxes:
        seeds[other.slices()] = 255
    seeds[box.y0:box.y1, (box.x0 + box.x1) // 2] = box.class_id       # a cross: tightness met
    seeds[(box.y0 + box.y1) // 2, box.x0:box.x1] = box.class_id
    from graphwsss.data.palette import write_label_png
    write_label_png(ctx.paths.seed(image_id), seeds)
    refine.run(ctx, [image_id])
    label = read_label_png(ctx.paths.pseudo_label(image_id))
    inside = label[box.slices()]
    alone = np.ones(seeds.shape, bool)
    for other in sample.boxes:
        if other is not box:
            alone[other.slices()] = False
    unknown = (seeds == 255) & alone
    assert (label[unknown] == 0).all() and (inside == box.class_id).sum() > 0


def test_run_redraws_box_objects_with_grabcut_when_asked(probability_run):
    """``refine.grabcut_iterations``: the label the stage writes is GrabCut's redraw of the
    label it writes without it; other supervisions never run it."""
    from graphwsss.postprocess import grabcut_from_label

    ctx, image_id, _ = probability_run
    refine.run(ctx, [image_id])
    plain = read_label_png(ctx.paths.pseudo_label(image_id))
    ctx.paths.pseudo_label(image_id).unlink()
    ctx.settings.refine.grabcut_iterations = 2
    refine.run(ctx, [image_id])
    redrawn = read_label_png(ctx.paths.pseudo_label(image_id))
    sample = ctx.dataset.load(image_id)
    expected, taken = grabcut_from_label(sample.image, plain, sample.boxes, 2,
                                         ctx.settings.refine.tight_coverage)
    assert taken > 0 and (redrawn != plain).any() and (redrawn == expected).all()
    assert refine.grabcut_boxes(sample, plain, "scribble", ctx.settings.refine) == (plain, 0)
