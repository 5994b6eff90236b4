"""Broken input files end ``graphwsss run`` with exit code 2 and one line naming the file,
before anything is written outside the run folder (the reader's own checks are in
``tests/data``; these go through the command line)."""

from __future__ import annotations

import json

import pytest

from graphwsss.data import DataError, VOCDataset, read_label_png, write_label_png
from tests.reliability.conftest import set_split

IMAGE = "10_10_s"


def _truncated_jpeg(root):
    path = root / "JPEGImages" / f"{IMAGE}.jpg"
    path.write_bytes(path.read_bytes()[:2000])
    return path, "cannot read the image"


def _empty_jpeg(root):
    path = root / "JPEGImages" / f"{IMAGE}.jpg"
    path.write_bytes(b"")
    return path, "cannot read the image"


def _mask_size(root):
    path = root / "SegmentationClass" / f"{IMAGE}.png"
    write_label_png(path, read_label_png(path)[:, :-3])
    return path, "size 317x213 differs from the image's 320x213"


def _xml(root, old, new):
    path = root / "Annotations" / f"{IMAGE}.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return path


def _unknown_class(root):
    return _xml(root, "<name>flower</name>", "<name>unicorn</name>"), \
        "object 0 has class 'unicorn', which is not a foreground class"


def _empty_box(root):
    return _xml(root, "<xmax>203</xmax>", "<xmax>115</xmax>"), "empty box"


def _box_outside(root):
    return _xml(root, "<xmin>116</xmin><ymin>57</ymin><xmax>203</xmax>",
                "<xmin>400</xmin><ymin>57</ymin><xmax>450</xmax>"), "lies outside the 320x213 image"


def _malformed_xml(root):
    return _xml(root, "</annotation>", ""), "not valid XML"


def _no_bndbox(root):
    return _xml(root, "<xmin>116</xmin>", "<xmin>left</xmin>"), "object 0 (flower) has no readable bndbox"


def _missing_image(root):
    path = root / "JPEGImages" / f"{IMAGE}.jpg"
    path.unlink()
    return path, "image file is missing"


@pytest.mark.parametrize("breaker", [_truncated_jpeg, _empty_jpeg, _mask_size, _unknown_class,
                                     _empty_box, _box_outside, _malformed_xml, _no_bndbox,
                                     _missing_image])
def test_broken_file_stops_the_run_with_one_line_naming_it(sample_copy, run_cli, breaker):
    set_split(sample_copy, [IMAGE])
    path, message = breaker(sample_copy)
    code, line, out = run_cli(sample_copy)
    assert code == 2
    assert line.startswith(f"graphwsss: error: {path}: ") and message in line
    assert not (out / "pseudo_labels").exists()


@pytest.mark.parametrize("content, message", [
    ("{broken", r"points JSON: invalid JSON"),
    ("[1, 2]", "must map image ids to lists of points"),
    ('{"10_10_s": {"x": 1}}', "image '10_10_s': points must be a list"),
    ('{"10_10_s": [7]}', "point 0 of image '10_10_s' must be an object"),
    ('{"10_10_s": [{"x": "left", "y": 1, "class": "flower"}]}', "needs integer 'x' and 'y'"),
    ('{"10_10_s": [{"x": 1, "y": 1, "class": ["flower"]}]}', r"has class \['flower'\]"),
    ('{"10_10_s": [{"x": 1, "y": 1, "class_id": "two"}]}', "class_id 'two', not an integer"),
    ('{"10_10_s": [{"x": 1, "y": 1}]}', "names no class"),
])
def test_malformed_points_json_is_named(sample_copy, content, message):
    path = sample_copy / "points.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        VOCDataset(sample_copy).load(IMAGE)
    assert str(error.value).startswith(f"{path}: ")


def test_malformed_points_json_stops_a_point_run(sample_copy, run_cli):
    set_split(sample_copy, [IMAGE])
    path = sample_copy / "points.json"
    path.write_text(json.dumps({IMAGE: [{"x": 1, "y": 1}]}))
    code, line, _ = run_cli(sample_copy, "cam.training.epochs=1", supervision="point")
    assert code == 2
    assert line == f"graphwsss: error: {path}: point 0 of image '{IMAGE}' names no class"
