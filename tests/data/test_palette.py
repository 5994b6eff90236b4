import numpy as np
import pytest
from PIL import Image

from graphwsss.data import DataError, read_label_png, voc_palette, write_label_png


def test_voc_palette_known_colours():
    palette = voc_palette()
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]
    assert palette[255].tolist() == [224, 224, 192]


def test_label_png_round_trip_is_palette(tmp_path):
    label = np.array([[0, 1, 2], [255, 16, 3]], dtype=np.uint8)
    path = write_label_png(tmp_path / "sub" / "a.png", label)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    np.testing.assert_array_equal(read_label_png(path), label)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]  # no temporary left


def test_write_rejects_bad_shape_and_keeps_existing_file(tmp_path):
    path = tmp_path / "a.png"
    write_label_png(path, np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="must be"):
        write_label_png(path, np.zeros((2, 2, 3), np.uint8))
    np.testing.assert_array_equal(read_label_png(path), np.zeros((2, 2)))


def test_missing_label_file(tmp_path):
    with pytest.raises(DataError, match="label file is missing"):
        read_label_png(tmp_path / "none.png")
