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
