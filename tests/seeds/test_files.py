"""Seeds read from another tool's files (issue 15.2): label and mask PNGs, their checks."""

import numpy as np
import pytest
from PIL import Image

from graphwsss.data.errors import DataError
from graphwsss.data.records import Box
from graphwsss.seeds.files import read_seed_file

BOXES = [Box(0, 0, 6, 6, 2), Box(2, 2, 4, 4, 5)]


def _save(path, values, mode="L"):
    Image.fromarray(np.asarray(values, dtype=np.uint8)).convert(mode).save(path)


def test_label_seeds_are_read_and_checked(tmp_path):
    label = np.full((6, 8), 255, np.uint8)
    label[:2] = 0
    label[3:, :3] = 4
    _save(tmp_path / "a.png", label)
    seeds = read_seed_file(tmp_path, "a", "labels", 5, BOXES, (6, 8))
    assert np.array_equal(seeds, label)
    label[0, 0] = 7
    _save(tmp_path / "a.png", label)
    with pytest.raises(DataError, match=r"a\.png: seed labels hold class id\(s\) 7"):
        read_seed_file(tmp_path, "a", "labels", 5, BOXES, (6, 8))


def test_missing_mis_sized_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"b\.png: seed file is missing"):
        read_seed_file(tmp_path, "b", "labels", 5, BOXES, (6, 8))
    _save(tmp_path / "b.png", np.zeros((6, 7)))
    with pytest.raises(DataError, match=r"b\.png: seed file size 7x6 differs from the image's 8x6"):
        read_seed_file(tmp_path, "b", "mask", 5, BOXES, (6, 8))
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"b\.png: cannot read the seed PNG"):
        read_seed_file(tmp_path, "b", "labels", 5, BOXES, (6, 8))
    _save(tmp_path / "b.png", np.zeros((6, 8, 3)), mode="RGB")
    with pytest.raises(DataError, match=r"b\.png: seed PNG has mode 'RGB'"):
        read_seed_file(tmp_path, "b", "labels", 5, BOXES, (6, 8))


@pytest.mark.parametrize("on,mode", [(255, "L"), (1, "L"), (255, "1")])
def test_binary_mask_takes_the_smallest_containing_box(tmp_path, on, mode):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:5, 1:5] = on
    mask[0, 7] = on                        # foreground outside every box: unknown
    _save(tmp_path / "m.png", mask, mode)
    seeds = read_seed_file(tmp_path, "m", "mask", 6, BOXES, (6, 8))
    assert seeds[1, 1] == 2 and seeds[3, 3] == 5 and seeds[0, 7] == 255
    assert seeds[5, 5] == 0 and seeds[0, 0] == 0


def test_instance_mask_takes_the_class_of_the_box_it_overlaps_most(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:4] = 1                     # inside both boxes: the small one fits it best
    mask[4:6, 0:3] = 2                     # only in the big box
    mask[0:2, 6:8] = 3                     # in no box: unknown
    _save(tmp_path / "i.png", mask)
    seeds = read_seed_file(tmp_path, "i", "mask", 6, BOXES, (6, 8))
    assert seeds[2, 2] == 5 and seeds[5, 0] == 2 and seeds[0, 6] == 255 and seeds[0, 0] == 0


def test_mask_without_boxes_is_an_error(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1, 1] = 255
    _save(tmp_path / "n.png", mask)
    with pytest.raises(DataError, match=r"n\.png: mask seeds need the image's boxes"):
        read_seed_file(tmp_path, "n", "mask", 6, [], (6, 8))
