"""Image ids become file names: ids that would leave their folder, or collide, are refused
where they are read, with the list file, the line and the problem; nothing is written."""

from __future__ import annotations

import json
import os

import pytest

from graphwsss.data import COCODataset, DataError, VOCDataset
from graphwsss.data.tags import read_tags
from graphwsss.stages.paths import RunPaths
from graphwsss.utils.io import inside
from tests.reliability.conftest import set_split

HOSTILE = [
    ("../../evil", "line 2: image id '../../evil' contains a path separator"),
    ("../x", "line 2: image id '../x' contains a path separator"),
    ("a/b", "line 2: image id 'a/b' contains a path separator"),
    ("a\\b", r"line 2: image id 'a\\\\b' contains a path separator"),
    ("/tmp/evil", "line 2: image id '/tmp/evil' is an absolute path"),
    ("..", "line 2: image id '..' names a folder, not a file"),
    ("10_10_s", "line 2: image id '10_10_s' repeats line 1"),
]


@pytest.mark.parametrize("hostile, message", HOSTILE)
def test_hostile_split_line_is_refused_by_the_reader(sample_copy, hostile, message):
    split = set_split(sample_copy, ["10_10_s", hostile])
    with pytest.raises(DataError, match=message) as error:
        VOCDataset(sample_copy)
    assert str(error.value).startswith(f"{split}: ")


@pytest.mark.parametrize("hostile, message", HOSTILE)
def test_hostile_split_line_stops_a_run_before_anything_is_written(sample_copy, run_cli,
                                                                   tmp_path, hostile, message):
    split = set_split(sample_copy, ["10_10_s", hostile])
    code, line, out = run_cli(sample_copy)
    assert code == 2
    assert line.startswith(f"graphwsss: error: {split}: line 2: ")
    assert not out.exists() or not any(out.rglob("*.png"))
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "work" / "evil.png").exists()


def test_absolute_id_with_a_drive_and_nul_and_empty_ids(sample_copy):
    split = set_split(sample_copy, ["10_10_s", "C:evil"])
    with pytest.raises(DataError, match="line 2: image id 'C:evil' is an absolute path"):
        VOCDataset(sample_copy)
    split.write_bytes(b"10_10_s\nbad\x00id\n")
    with pytest.raises(DataError, match="line 2: .* contains a NUL character"):
        VOCDataset(sample_copy)
    with pytest.raises(DataError, match="item 1 of the given image ids: empty image id"):
        VOCDataset(sample_copy, ids=["10_10_s", ""])


def test_image_files_with_one_stem_collide(sample_copy):
    (sample_copy / "ImageSets" / "Segmentation" / "train.txt").unlink()
    jpeg = sample_copy / "JPEGImages" / "10_10_s.jpg"
    (sample_copy / "JPEGImages" / "10_10_s.png").write_bytes(jpeg.read_bytes())
    with pytest.raises(DataError, match=r"JPEGImages: file 10_10_s\.png: image id '10_10_s' "
                                        r"repeats file 10_10_s\.jpg"):
        VOCDataset(sample_copy)


def test_hostile_ids_in_points_and_tags(sample_copy, tmp_path):
    points = sample_copy / "points.json"
    points.write_text(json.dumps({"../../evil": [{"class": "cow", "x": 1, "y": 1}]}))
    with pytest.raises(DataError, match=r"points\.json: entry 0: image id '../../evil' "
                                        "contains a path separator"):
        VOCDataset(sample_copy).load("10_10_s")
    points.write_text('{"10_10_s": [], "10_10_s": []}')
    with pytest.raises(DataError, match=r"points\.json: points JSON: key '10_10_s' appears twice"):
        VOCDataset(sample_copy).load("10_10_s")
    class_ids = {"background": 0, "cow": 1}
    tags = tmp_path / "tags.csv"
    tags.write_text("a,cow\nb,cow\na,cow\n")
    with pytest.raises(DataError, match=r"tags\.csv: line 3: image id 'a' repeats line 1"):
        read_tags(tags, class_ids)
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps({"/etc/passwd": ["cow"]}))
    with pytest.raises(DataError, match=r"tags\.json: entry 0: image id '/etc/passwd'"):
        read_tags(tags, class_ids)


def _coco(tmp_path, *file_names):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": index, "file_name": name, "width": 4, "height": 4}
                   for index, name in enumerate(file_names)],
        "annotations": [], "categories": [{"id": 1, "name": "cow"}]}))
    return path


@pytest.mark.parametrize("file_names, message", [
    (["a.jpg", "../../evil.jpg"], r"images\[1\] \(id 1\): file_name '../../evil.jpg' must be a "
                                  "path inside the image folder"),
    (["/etc/evil.jpg"], "must be a path inside the image folder"),
    (["x/a.jpg", "y/a.jpg"], r"images\[1\] .*image id 'a' repeats images\[0\]"),
    (["..jpg"], "image id '.' names a folder"),
])
def test_hostile_coco_file_names(tmp_path, file_names, message):
    path = _coco(tmp_path, *file_names)
    with pytest.raises(DataError, match=message) as error:
        COCODataset(path, tmp_path)
    assert str(error.value).startswith(f"{path}: ")


def test_output_paths_stay_inside_the_run_folder(tmp_path):
    root = tmp_path / "run"
    paths = RunPaths(root)
    assert paths.seed("a") == root / "seeds" / "a.png"
    assert paths.pseudo_label("a") == root / "pseudo_labels" / "a.png"
    # ("../x" stays inside the run folder; the readers refuse it, see above.)
    for hostile in ("../../evil", "../../../x", str(tmp_path / "evil")):
        with pytest.raises(DataError, match="outside the run folder"):
            paths.pseudo_label(hostile)
        with pytest.raises(DataError, match="outside the run folder"):
            paths.cams(hostile)
    # A folder of the run that links elsewhere is refused too.
    (tmp_path / "elsewhere").mkdir()
    root.mkdir()
    os.symlink(tmp_path / "elsewhere", root / "seeds")
    with pytest.raises(DataError, match=r"seeds/a\.png: resolves to .*elsewhere"):
        paths.seed("a")
    assert inside(root, "x/../y.png") == root / "x/../y.png"
    with pytest.raises(DataError):
        inside(root, "x/../../y.png")
