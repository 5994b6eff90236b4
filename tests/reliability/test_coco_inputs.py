"""Issue 15.4: bad COCO input through ``graphwsss run``: exit code 2 and one line naming the file
and the entry, nothing written outside the run folder; and a detection file (boxes only) with
its images elsewhere (``--images``)."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    """``(instances JSON, image folder)``: two small images with one box each, no masks."""
    images = tmp_path / "pictures"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.jpg"):
        picture = np.full((48, 64, 3), 40, np.uint8)
        picture[12:36, 16:44] = 200 + rng.integers(0, 40, (24, 28, 3), dtype=np.uint8)
        Image.fromarray(picture).save(images / name)
    content = {
        "info": {}, "licenses": [],
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 18, "name": "dog"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 18, "bbox": [14, 10, 32, 28],
                         "iscrowd": 0},
                        {"id": 6, "image_id": 2, "category_id": 18, "bbox": [14, 10, 32, 28],
                         "iscrowd": 0}],
    }
    path = tmp_path / "data" / "instances.json"
    path.parent.mkdir()
    path.write_text(json.dumps(content))
    return path, images


def _edit(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


@pytest.mark.parametrize("change, message", [
    (lambda c: c["annotations"][1].update(image_id=9),
     r"instances\.json: annotations\[1\] \(id 6\) refers to image id 9, which is not in 'images'"),
    (lambda c: c["images"][1].update(file_name="gone.jpg"),
     r"gone\.jpg: image file is missing \(images\[1\], id 2, of .*instances\.json\)"),
    (lambda c: c["annotations"][0].update(category_id=3),
     r"instances\.json: annotations\[0\] \(id 5\) has category id 3, not in 'categories'"),
    (lambda c: c["annotations"][1].update(bbox=[14, 10, 0, 28]),
     r"instances\.json: annotations\[1\] \(id 6\): empty box: bbox \[14, 10, 0, 28\]"),
    (lambda c: c["annotations"][1].update(bbox=[14, 10, 5, -2]),
     r"annotations\[1\] \(id 6\): empty box"),
])
def test_bad_coco_file_exits_2_naming_file_and_entry(tmp_path, run_cli, change, message):
    path, images = _coco(tmp_path)
    _edit(path, change)
    code, line, out = run_cli(path, "--images", str(images))
    assert code == 2
    assert pytest.importorskip("re").search(message, line), line
    assert not out.exists()


def test_malformed_coco_json_exits_2(tmp_path, run_cli):
    path, images = _coco(tmp_path)
    path.write_text(path.read_text()[:-20])
    code, line, out = run_cli(path, "--images", str(images))
    assert code == 2 and "instances.json: cannot read COCO JSON: invalid JSON" in line
    assert not out.exists()


def test_missing_image_folder_and_scribbles_exit_2(tmp_path, run_cli):
    path, images = _coco(tmp_path)
    code, line, _ = run_cli(path)                       # no --images: nothing beside the JSON
    assert code == 2 and "a.jpg: image file is missing" in line
    code, line, _ = run_cli(path, "--images", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere: --images folder does not exist" in line
    code, line, _ = run_cli(path, "--images", str(images), supervision="scribble")
    assert code == 2 and "COCO input has no scribbles" in line


def test_detection_file_with_images_elsewhere(tmp_path, run_cli):
    """Boxes only: pseudo labels, instances and annotations.json with one mask per box; no
    ground truth, so no metrics.json."""
    path, images = _coco(tmp_path)
    # Overrides before --images: argparse takes no positionals after it once they began.
    code, err, out = run_cli(path, "limit=1", "--images", str(images))
    assert code == 0, err
    assert (out / "pseudo_labels" / "a.png").is_file() and not (out / "metrics.json").exists()
    written = json.loads((out / "annotations.json").read_text())
    assert [image["id"] for image in written["images"]] == [1]
    [annotation] = written["annotations"]
    assert annotation["id"] == 5 and annotation["category_id"] == 18
    assert annotation["area"] > 0 and isinstance(annotation["segmentation"]["counts"], str)
    [result] = json.loads((out / "instances" / "instances.json").read_text())
    assert result["image_id"] == 1 and result["category_id"] == 18
