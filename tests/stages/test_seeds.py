"""The seeds stage (docs/method.md §2): weak labels (and CAMs) to the GNN's seeds."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from graphwsss.config import ConfigError, load_config
from graphwsss.data.errors import DataError
from graphwsss.data.palette import read_label_png
from graphwsss.data.records import Point, Sample
from graphwsss.data.voc import VOCDataset
from graphwsss.settings import RunSettings
from graphwsss.stages import seeds
from graphwsss.stages.paths import RunContext, RunPaths
from graphwsss.stages.seeds import make_seeds


def test_run_writes_seeds_once_per_image(tmp_path, sample_root):
    dataset = VOCDataset(sample_root)
    ids = dataset.ids[:2]
    ctx = RunContext(dataset, RunPaths(tmp_path), RunSettings(), torch.device("cpu"), False)
    seeds.run(ctx, ids)
    for image_id in ids:
        seed = read_label_png(ctx.paths.seed(image_id))
        assert seed.shape == dataset.load(image_id).image.shape[:2]
        assert len(seeds.seed_classes(seed)) >= 2
    assert not ctx.paths.affinity_seeds.exists()          # box seeds serve the affinity CNN too
    stamp = ctx.paths.seed(ids[0]).stat().st_mtime_ns
    seeds.run(ctx, ids)
    assert ctx.paths.seed(ids[0]).stat().st_mtime_ns == stamp


def test_seeds_of_one_class_are_warned_about(tmp_path, sample_root, caplog, monkeypatch):
    dataset = VOCDataset(sample_root)
    ctx = RunContext(dataset, RunPaths(tmp_path), RunSettings(), torch.device("cpu"), False)
    monkeypatch.setattr(seeds, "make_seeds", lambda sample, *args, **kwargs: (
        (np.zeros(sample.image.shape[:2], np.uint8),) * 2))
    with caplog.at_level(logging.WARNING):
        seeds.run(ctx, dataset.ids[:1])
    assert f"image {dataset.ids[0]}: its seeds hold class 0 only" in caplog.text


def test_seed_files_need_a_folder(tmp_path):
    settings = load_config(RunSettings, None, ["seeds.source=files"])
    with pytest.raises(ConfigError, match="needs seeds.dir"):
        seeds.check_seed_source(settings)
    settings = load_config(RunSettings, None, ["seeds.source=files",
                                               f"seeds.dir={tmp_path / 'absent'}"])
    with pytest.raises(DataError, match="seeds.dir is not a folder"):
        seeds.check_seed_source(settings)


def test_box_seeds_fuse_with_cams_when_given(sample_root):
    """§2, 3.4–3.5: with CAMs a box keeps GrabCut's foreground only where the CAM agrees; a box
    whose class the CAM misses keeps its GrabCut seeds; outside the boxes nothing changes."""
    settings = load_config(RunSettings, None, ["seeds.cam_fusion=true"])
    sample = VOCDataset(sample_root).load(VOCDataset(sample_root).ids[0])
    grabcut, _ = make_seeds(sample, settings)
    box = sample.boxes[0]
    cams = np.zeros((VOCDataset(sample_root).num_classes - 1, sample.height, sample.width),
                    np.float32)
    rows = slice(box.y0, (box.y0 + box.y1) // 2)      # the CAM covers the box's upper half only
    cams[box.class_id - 1, rows, box.x0:box.x1] = 1.0
    fused, affinity = make_seeds(sample, settings, cams)
    assert fused is affinity
    inside = np.zeros(fused.shape, bool)
    for other in sample.boxes:
        inside[other.slices()] = True
    assert np.array_equal(fused[~inside], grabcut[~inside])
    assert ((fused == grabcut) | (fused == 255)).all()
    own = np.zeros(fused.shape, bool)
    own[box.slices()] = True
    lower = own.copy()
    lower[rows] = False
    assert not (fused[lower & ~_other_boxes(sample, box)] == box.class_id).any()
    assert (fused[own] == box.class_id).any()

    missed = make_seeds(sample, settings, np.zeros_like(cams))[0]   # CAM misses every class
    assert np.array_equal(missed, grabcut)


def _other_boxes(sample, box):
    covered = np.zeros((sample.height, sample.width), bool)
    for other in sample.boxes:
        if other is not box:
            covered[other.slices()] = True
    return covered


def test_point_seeds_of_an_image_without_objects_are_background(sample_root):
    """An empty points.json entry (an image without objects) gives background seeds and no
    foreground; an image without an entry is an error that names points.json."""
    settings = load_config(RunSettings, None, ["supervision=point"])
    sample = VOCDataset(sample_root).load(VOCDataset(sample_root).ids[0])
    cams = np.zeros((16, *sample.image.shape[:2]), np.float32)   # no class present
    empty = dataclasses.replace(sample, points=[])
    gnn, _ = make_seeds(empty, settings, cams)
    assert set(seeds.seed_classes(gnn)) == {0}
    with pytest.raises(DataError, match=r"no entry in points\.json for this image"):
        make_seeds(dataclasses.replace(sample, points=None), settings, cams)


def test_scribble_seeds_of_an_image_without_background_hold_none():
    """Scribbles that mark no background in a data set that scribbles it (``no_background``):
    neither the CAM's confident background nor the low-CAM rule adds background seeds, to the
    GNN's seeds or the affinity CNN's; otherwise both do."""
    settings = load_config(RunSettings, None, ["supervision=scribble"])
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    scribble = np.full((60, 80), 255, np.uint8)
    scribble[30, 10:70] = 3
    cams = np.zeros((4, 60, 80), np.float32)      # a CAM that sees nothing: all confident background
    sample = Sample(image_id="close-up", image=image, scribble=scribble, no_background=True)
    gnn, affinity = make_seeds(sample, settings, cams)
    assert seeds.seed_classes(gnn) == [3] and seeds.seed_classes(affinity) == [3]
    gnn, affinity = make_seeds(dataclasses.replace(sample, no_background=False), settings, cams)
    assert seeds.seed_classes(gnn) == [0, 3] and seeds.seed_classes(affinity) == [0, 3]


@pytest.mark.parametrize("cam_foreground", [True, False])
def test_point_seeds_take_the_cams_foreground_only_when_asked(cam_foreground):
    """``seeds.point_cam_foreground``: the CAM's confident foreground fills the GNN seeds outside
    the points' superpixels (default), or only its confident background does; the affinity
    CNN's seeds are M'_I either way."""
    settings = load_config(RunSettings, None, ["supervision=point",
                                               f"seeds.point_cam_foreground={cam_foreground}"])
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    cams = np.zeros((4, 60, 80), np.float32)
    cams[1, :, 40:] = np.linspace(0.2, 1.0, 40)    # class 2 on the right half
    sample = Sample(image_id="a", image=image, points=[Point(5, 30, 2)])
    gnn, affinity = make_seeds(sample, settings, cams)
    assert gnn[30, 5] == 2 and (gnn[:, :30] != 2).sum() < 60 * 30
    assert (gnn[:, 70:] == 2).any() == cam_foreground
    assert (affinity[:, 70:] == 2).any() and (gnn[:, 40:] == 0).sum() == 0


@pytest.mark.parametrize("no_background", [False, True])
def test_scribble_affinity_seeds_leave_out_the_cam_when_asked(no_background):
    """``seeds.scribble_affinity_cam``: the affinity CNN learns from M_S, else the CAM's
    confident seeds (default), or from the GNN's seeds alone, which hold no CAM foreground."""
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    scribble = np.full((60, 80), 255, np.uint8)
    scribble[30, 10:30] = 1
    if not no_background:
        scribble[5, 5:75] = 0
    cams = np.zeros((4, 60, 80), np.float32)
    cams[1, :, 50:] = 1.0                          # class 2, confident, far from every scribble
    sample = Sample(image_id="a", image=image, scribble=scribble, no_background=no_background)
    for with_cam in (True, False):
        settings = load_config(RunSettings, None, [
            "supervision=scribble", f"seeds.scribble_affinity_cam={with_cam}"])
        gnn, affinity = make_seeds(sample, settings, cams)
        assert not (gnn == 2).any()
        assert (affinity[:, 60:] == 2).any() == with_cam
        if not with_cam:
            np.testing.assert_array_equal(affinity, gnn)
