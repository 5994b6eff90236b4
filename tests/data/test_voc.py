import json
import warnings

import numpy as np
import pytest
from PIL import Image

from graphwsss.data import Box, DataError, VOCDataset, read_label_png, write_label_png
from tests.conftest import shared_set


def _rewrite_xml(root, image_id, replace):
    path = root / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new, 1)
    path.write_text(text)
    return path


def test_sample_reads_every_annotation(sample_root):
    dataset = VOCDataset(sample_root)
    assert len(dataset) == 12
    assert dataset.class_names[0] == "background" and dataset.num_classes == 17
    sample = dataset.load("10_10_s")
    assert sample.image.shape == (213, 320, 3) and sample.image.dtype == np.uint8
    # VOC 1-based inclusive xmin=116..xmax=203 becomes 0-based half-open 115..203.
    assert sample.boxes[0] == Box(115, 56, 203, 142, dataset.class_ids["flower"])
    assert sample.tags == (dataset.class_ids["flower"],)
    assert sample.label.shape == sample.scribble.shape == sample.instance.shape == (213, 320)
    assert [(p.x, p.y) for p in sample.points] == [(160, 78), (305, 43)]


def test_tags_come_from_boxes(sample_root):
    dataset = VOCDataset(sample_root)
    sample = dataset.load("19_11_s")
    names = {dataset.class_names[c] for c in sample.tags}
    assert names == {"face", "car", "body"}


def test_missing_image_names_file(sample_copy):
    (sample_copy / "JPEGImages" / "10_10_s.jpg").unlink()
    with pytest.raises(DataError, match=r"10_10_s\.jpg: image file is missing"):
        VOCDataset(sample_copy).load("10_10_s")


def test_corrupt_image_names_file(sample_copy):
    (sample_copy / "JPEGImages" / "10_10_s.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"10_10_s\.jpg: cannot read the image"):
        VOCDataset(sample_copy).load("10_10_s")


def test_missing_labels_txt(sample_copy):
    (sample_copy / "labels.txt").unlink()
    with pytest.raises(DataError, match=r"labels\.txt"):
        VOCDataset(sample_copy)


def test_missing_annotation_names_file(sample_copy):
    (sample_copy / "Annotations" / "10_10_s.xml").unlink()
    with pytest.raises(DataError, match=r"10_10_s\.xml: annotation file is missing"):
        VOCDataset(sample_copy).load("10_10_s")


def test_missing_ground_truth_names_file(sample_copy):
    (sample_copy / "SegmentationClass" / "10_10_s.png").unlink()
    with pytest.raises(DataError, match=r"SegmentationClass/10_10_s\.png: ground-truth file is missing"):
        VOCDataset(sample_copy).load("10_10_s")


def test_unknown_class_name(sample_copy):
    path = _rewrite_xml(sample_copy, "10_10_s", {"<name>flower</name>": "<name>unicorn</name>"})
    with pytest.raises(DataError, match="'unicorn', which is not a foreground class") as error:
        VOCDataset(sample_copy).load("10_10_s")
    assert str(path) in str(error.value)


def test_empty_box(sample_copy):
    _rewrite_xml(sample_copy, "10_10_s", {"<xmax>203</xmax>": "<xmax>100</xmax>"})
    with pytest.raises(DataError, match=r"10_10_s\.xml: empty box"):
        VOCDataset(sample_copy).load("10_10_s")


def test_box_outside_image(sample_copy):
    _rewrite_xml(sample_copy, "10_10_s", {"<xmin>116</xmin>": "<xmin>400</xmin>",
                                          "<xmax>203</xmax>": "<xmax>450</xmax>"})
    with pytest.raises(DataError, match="lies outside the 320x213 image"):
        VOCDataset(sample_copy).load("10_10_s")


def test_box_partly_outside_is_clipped_with_warning(sample_copy):
    _rewrite_xml(sample_copy, "10_10_s", {"<xmax>203</xmax>": "<xmax>400</xmax>"})
    with pytest.warns(UserWarning, match=r"10_10_s\.xml: .*partly outside.*clipped"):
        sample = VOCDataset(sample_copy).load("10_10_s")
    assert sample.boxes[0].x1 == 320


def test_mask_size_differs_from_image(sample_copy):
    path = sample_copy / "SegmentationClass" / "10_10_s.png"
    write_label_png(path, read_label_png(path)[:-1])
    with pytest.raises(DataError, match=r"SegmentationClass/10_10_s\.png: size 320x212 differs"):
        VOCDataset(sample_copy).load("10_10_s")


def test_declared_size_differs_from_image(sample_copy):
    _rewrite_xml(sample_copy, "10_10_s", {"<width>320</width>": "<width>321</width>"})
    with pytest.raises(DataError, match="declares size 321x213"):
        VOCDataset(sample_copy).load("10_10_s")


def test_class_id_not_in_labels(sample_copy):
    path = sample_copy / "SegmentationScribble" / "10_10_s.png"
    scribble = read_label_png(path)
    scribble[0, 0] = 40
    write_label_png(path, scribble)
    with pytest.raises(DataError, match=r"SegmentationScribble/10_10_s\.png: class ids \[40\]"):
        VOCDataset(sample_copy).load("10_10_s")


def test_colour_label_png_rejected(sample_copy):
    path = sample_copy / "SegmentationClass" / "10_10_s.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DataError, match="mode 'RGB'"):
        VOCDataset(sample_copy).load("10_10_s")


def test_point_outside_image_and_unknown_class(sample_copy):
    points_path = sample_copy / "points.json"
    points = json.loads(points_path.read_text())
    points["10_10_s"][0]["x"] = 999
    points_path.write_text(json.dumps(points))
    with pytest.raises(DataError, match=r"points\.json: point \(999, 78\) of image '10_10_s' lies outside"):
        VOCDataset(sample_copy).load("10_10_s")
    points["10_10_s"][0].update(x=1, **{"class": "unicorn"})
    points_path.write_text(json.dumps(points))
    with pytest.raises(DataError, match="class 'unicorn', not in labels.txt"):
        VOCDataset(sample_copy).load("10_10_s")


def test_without_split_file_lists_images(sample_copy):
    (sample_copy / "ImageSets" / "Segmentation" / "train.txt").unlink()
    assert len(VOCDataset(sample_copy)) == 12


@pytest.mark.shared_data
@pytest.mark.parametrize("name,count", [("msrc-objects", 350), ("grabcut", 50)])
def test_shared_sets_read_cleanly(name, count):
    root = shared_set(name)
    dataset = VOCDataset(root)
    assert len(dataset) == count
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for sample in dataset:
            assert sample.label is not None and all(box.area > 0 for box in sample.boxes)


def test_points_entry_missing_is_none_and_empty_entry_is_an_image_without_objects(sample_copy):
    """An id absent from points.json has no point annotation (``None``); an entry with no point
    is an annotated image without objects (``[]``)."""
    points_path = sample_copy / "points.json"
    points = json.loads(points_path.read_text())
    points["10_10_s"] = []
    del points["1_11_s"]
    points_path.write_text(json.dumps(points))
    dataset = VOCDataset(sample_copy, supervision="point")
    assert dataset.load("10_10_s").points == []
    assert dataset.load("1_11_s").points is None
    assert VOCDataset(sample_copy, supervision="box").load("10_10_s").points is None


def test_scribbles_that_mark_background_elsewhere_mean_none_where_they_do_not(sample_root,
                                                                              sample_copy):
    """In a data set whose scribbles mark background (12_13_s has a background stroke), an image
    without one (10_10_s: a flower filling the frame) has no background; ``unannotated`` and a
    data set that never scribbles background keep background possible everywhere."""
    dataset = VOCDataset(sample_root, supervision="scribble")
    assert dataset.background_is_scribbled
    assert dataset.load("10_10_s").no_background and not dataset.load("12_13_s").no_background
    assert not VOCDataset(sample_root, supervision="scribble",
                          scribble_background="unannotated").load("10_10_s").no_background
    assert not VOCDataset(sample_root, supervision="box").load("10_10_s").no_background
    for path in (sample_copy / "SegmentationScribble").glob("*.png"):
        scribble = read_label_png(path)
        scribble[scribble == 0] = 255
        write_label_png(path, scribble)
    unmarked = VOCDataset(sample_copy, supervision="scribble")
    assert not unmarked.background_is_scribbled and not unmarked.load("10_10_s").no_background
    assert VOCDataset(sample_copy, supervision="scribble",
                      scribble_background="annotated").load("12_13_s").no_background
    with pytest.raises(ValueError, match="scribble_background must be"):
        VOCDataset(sample_root, scribble_background="sometimes")
