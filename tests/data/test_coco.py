import json

import numpy as np
import pytest
from PIL import Image

from graphwsss.data import COCODataset, DataError, decode_segmentation, encode_rle


def _uncompressed_rle(mask):
    """Column-major run lengths starting with a zero run: the COCO format, computed by hand."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def test_polygon_decodes_to_known_square():
    # A polygon around pixels 2..5 (x) and 1..3 (y).
    mask = decode_segmentation([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8)
    expected = np.zeros((6, 8), bool)
    expected[1:4, 2:6] = True
    np.testing.assert_array_equal(mask, expected)


def test_uncompressed_and_compressed_rle_match_known_mask():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) > 0.5
    np.testing.assert_array_equal(decode_segmentation(_uncompressed_rle(mask), 7, 9), mask)
    compressed = encode_rle(mask)
    assert isinstance(compressed["counts"], str)
    np.testing.assert_array_equal(decode_segmentation(compressed, 7, 9), mask)


def test_rle_of_wrong_size_is_rejected():
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation(encode_rle(np.ones((3, 3), bool)), 4, 4)


def _write_coco(tmp_path, annotations, width=10, height=8):
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / "a.jpg")
    content = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": width, "height": height}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": annotations,
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(content))
    return path


def test_coco_reader_builds_class_and_instance_maps(tmp_path):
    big = np.zeros((8, 10), bool)
    big[1:7, 1:9] = True
    small = np.zeros((8, 10), bool)
    small[2:4, 2:5] = True
    crowd = np.zeros((8, 10), bool)
    crowd[7, :] = True
    path = _write_coco(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 8, 6], "iscrowd": 0,
         "segmentation": encode_rle(big)},
        {"id": 2, "image_id": 7, "category_id": 3, "bbox": [2, 2, 3, 2], "iscrowd": 0,
         "segmentation": _uncompressed_rle(small)},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 7, 10, 1], "iscrowd": 1,
         "segmentation": _uncompressed_rle(crowd)},
    ])
    dataset = COCODataset(path, tmp_path)
    assert dataset.class_names == ["background", "dog", "cat"]
    sample = dataset[0]
    assert sample.image_id == "a"
    assert [(b.x0, b.y0, b.x1, b.y1, b.class_id) for b in sample.boxes] == [
        (1, 1, 9, 7, 1), (2, 2, 5, 4, 2)]
    expected = np.zeros((8, 10), np.uint8)
    expected[big] = 1
    expected[small] = 2          # the smaller instance wins
    expected[crowd] = 255        # crowd regions are void
    np.testing.assert_array_equal(sample.label, expected)
    assert set(np.unique(sample.instance[small])) == {2}
    assert sample.tags == (1, 2)


def test_coco_reader_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="annotation file is missing"):
        COCODataset(tmp_path / "none.json", tmp_path)
    path = _write_coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 99, "bbox": [0, 0, 1, 1],
                                   "segmentation": []}])
    with pytest.raises(DataError, match="category id 99"):
        COCODataset(path, tmp_path)
    path = _write_coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [0, 0, 0, 3],
                                   "segmentation": [[0, 0, 1, 0, 1, 1]]}])
    with pytest.raises(DataError, match="empty box"):
        COCODataset(path, tmp_path)[0]
    (tmp_path / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"a\.jpg: image file is missing"):
        COCODataset(path, tmp_path)[0]


# Issue 15: the reader behind `graphwsss run` on COCO input.

def _detection_file(tmp_path, annotations, images=None, categories=None, name="instances.json"):
    """A COCO detection file (boxes only) over two black images a.jpg (10x8), b.png (6x5)."""
    for file_name, (width, height) in (("a.jpg", (10, 8)), ("b.png", (6, 5))):
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / file_name)
    content = {
        "info": {"description": "test"}, "licenses": [{"id": 1, "name": "x"}],
        "images": images if images is not None else [
            {"id": 7, "file_name": "a.jpg", "width": 10, "height": 8, "license": 1},
            {"id": 3, "file_name": "b.png", "width": 6, "height": 5}],
        "categories": categories if categories is not None else [
            {"id": 5, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": annotations,
    }
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return path


BOXES = [{"id": 11, "image_id": 7, "category_id": 5, "bbox": [1.5, 1, 4, 3], "iscrowd": 0,
          "extra": "kept"},
         {"id": 12, "image_id": 7, "category_id": 2, "bbox": [0, 0, 10, 8], "iscrowd": 1},
         {"id": 13, "image_id": 3, "category_id": 2, "bbox": [1, 1, 2, 2]}]


def test_detection_file_gives_boxes_with_contiguous_classes_and_no_ground_truth(tmp_path):
    dataset = COCODataset(_detection_file(tmp_path, BOXES), tmp_path)
    assert dataset.ids == ["b", "a"]                       # in COCO image id order
    assert dataset.class_names == ["background", "dog", "cat"]
    assert dataset.category_to_class == {2: 1, 5: 2} and dataset.class_to_category == {1: 2, 2: 5}
    assert not dataset.has_ground_truth
    sample = dataset.load("a")
    assert sample.label is None and sample.instance is None
    # The crowd box is no weak label; the float box is widened to whole pixels.
    assert [(b.x0, b.y0, b.x1, b.y1, b.class_id) for b in sample.boxes] == [(1, 1, 6, 4, 2)]
    assert sample.tags == (2,) and dataset.box_count("a") == 1 and dataset.box_count(3) == 1
    assert dataset.load(3).image_id == "b"
    result = {"image_id": "a", "category_id": 2, "score": 1.0}
    assert dataset.to_result(result) == {"image_id": 7, "category_id": 5, "score": 1.0}


def test_with_masks_keeps_every_field_and_id(tmp_path):
    dataset = COCODataset(_detection_file(tmp_path, BOXES), tmp_path)
    mask = np.zeros((8, 10), bool)
    mask[1:3, 2:4] = True
    made = {"a": [{"segmentation": encode_rle(mask), "area": 4}], "b": [
        {"segmentation": encode_rle(np.zeros((5, 6), bool)), "area": 0}]}
    content = dataset.with_masks(["a", "b"], made.get)
    assert content["info"] == {"description": "test"} and content["licenses"][0]["name"] == "x"
    assert content["images"][0]["license"] == 1
    by_id = {annotation["id"]: annotation for annotation in content["annotations"]}
    assert set(by_id) == {11, 12, 13}
    assert by_id[11]["extra"] == "kept" and by_id[11]["bbox"] == [1.5, 1, 4, 3]
    assert by_id[11]["area"] == 4.0 and by_id[11]["category_id"] == 5
    np.testing.assert_array_equal(decode_segmentation(by_id[11]["segmentation"], 8, 10), mask)
    assert "segmentation" not in by_id[12]                  # crowd: as it was
    assert by_id[13]["area"] == 0.0 and by_id[13]["segmentation"]["size"] == [5, 6]
    only_a = dataset.with_masks(["a"], made.get)
    assert [image["id"] for image in only_a["images"]] == [7]
    assert {annotation["id"] for annotation in only_a["annotations"]} == {11, 12}


def test_find_coco_files_layouts(tmp_path):
    from graphwsss.data.coco import find_coco_files, is_coco_input

    (tmp_path / "annotations").mkdir()
    annotation_file = tmp_path / "annotations" / "instances_val2017.json"
    annotation_file.write_text("{}")
    with pytest.raises(DataError, match=r"no image folder found .*give --images"):
        find_coco_files(tmp_path)
    (tmp_path / "val2017").mkdir()
    assert find_coco_files(tmp_path) == (annotation_file, tmp_path / "val2017", tmp_path)
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    assert find_coco_files(annotation_file)[1] == tmp_path / "images" / "val2017"
    assert find_coco_files(annotation_file, images=tmp_path)[1] == tmp_path
    assert is_coco_input(tmp_path) and is_coco_input(annotation_file)
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    assert find_coco_files(tmp_path, split="train2017")[0].name == "instances_train2017.json"
    with pytest.raises(DataError, match=r"instances_train\.json: COCO annotation file is missing "
                                        r"\(found instances_train2017\.json, instances_val2017"):
        find_coco_files(tmp_path)
    with pytest.raises(DataError, match="--images folder does not exist"):
        find_coco_files(tmp_path, images=tmp_path / "nowhere", split="train2017")


@pytest.mark.parametrize("change, message", [
    (lambda c: c["annotations"].append({"id": 14, "image_id": 99, "category_id": 2,
                                        "bbox": [0, 0, 1, 1]}),
     r"instances\.json: annotations\[3\] \(id 14\) refers to image id 99, which is not in "
     r"'images'"),
    (lambda c: c["annotations"][2].update(category_id=4),
     r"instances\.json: annotations\[2\] \(id 13\) has category id 4, not in 'categories'"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, 0, 3]),
     r"instances\.json: annotations\[0\] \(id 11\): empty box: bbox \[1, 1, 0, 3\] has zero or "
     r"negative width or height"),
    (lambda c: c["annotations"][2].update(bbox=[1, 1, 2, -1]),
     r"annotations\[2\] \(id 13\): empty box"),
    (lambda c: c["annotations"][2].update(bbox=[1, 1, 2]),
     r"annotations\[2\] \(id 13\): 'bbox' must be \[x, y, width, height\]"),
    (lambda c: c["images"].append({"id": 8, "file_name": "gone.jpg"}),
     r"gone\.jpg: image file is missing \(images\[2\], id 8, of .*instances\.json\)"),
    (lambda c: c["images"].append({"id": 7, "file_name": "c.jpg"}),
     r"images\[2\]: image id 7 repeats an earlier one"),
    (lambda c: c["categories"].append({"id": 2, "name": "again"}),
     r"categories\[2\]: category id 2 repeats an earlier one"),
    (lambda c: c.pop("categories"), r"COCO JSON has no 'categories' list"),
])
def test_bad_coco_input_is_one_line_naming_file_and_entry(tmp_path, change, message):
    path = _detection_file(tmp_path, [dict(annotation) for annotation in BOXES])
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as error:
        COCODataset(path, tmp_path)
    assert "\n" not in str(error.value) and str(path.name) in str(error.value)


@pytest.mark.parametrize("text, message", [
    ('{"images": [', r"instances\.json: cannot read COCO JSON: invalid JSON"),
    (b"\xff\xfe{", r"instances\.json: cannot read COCO JSON"),
    ("[1, 2]", r"instances\.json: COCO JSON must be an object, not list"),
    ('{"images": {}, "annotations": [], "categories": []}',
     r"instances\.json: COCO JSON: 'images' must be a list, not dict"),
])
def test_unreadable_coco_json(tmp_path, text, message):
    path = tmp_path / "instances.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=message) as error:
        COCODataset(path, tmp_path)
    assert "\n" not in str(error.value)


def test_points_json_beside_the_file_for_point_runs(tmp_path):
    path = _detection_file(tmp_path, BOXES)
    (tmp_path / "points.json").write_text(json.dumps({"a": [{"class": "cat", "x": 2, "y": 3}]}))
    dataset = COCODataset(path, tmp_path, supervision="point", root=tmp_path)
    assert [(p.x, p.y, p.class_id) for p in dataset.load("a").points] == [(2, 3, 2)]
    assert dataset.load("b").points is None                # no entry: no point annotation
    assert COCODataset(path, tmp_path, supervision="box").load("a").points is None
