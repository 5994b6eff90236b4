import json

import pytest

from graphwsss.data.errors import DataError
from graphwsss.data.tags import read_tags
from graphwsss.data.voc import VOCDataset

CLASS_IDS = {"background": 0, "cow": 1, "sheep": 2}


def test_json_and_csv_tags(tmp_path):
    (tmp_path / "tags.json").write_text(json.dumps({"a": ["sheep", "cow"], "b": []}))
    assert read_tags(tmp_path / "tags.json", CLASS_IDS) == {"a": (1, 2), "b": ()}
    (tmp_path / "tags.csv").write_text("image,classes\na,sheep;cow\nb,cow,sheep\n")
    assert read_tags(tmp_path / "tags.csv", CLASS_IDS) == {"a": (1, 2), "b": (1, 2)}


@pytest.mark.parametrize("content, message", [
    ('{"a": ["horse"]}', "horse.*not in labels.txt"),
    ('{"a": ["background"]}', "background"),
    ('{"a": "cow"}', "lists of class names"),
    ("{broken", "invalid JSON"),
])
def test_bad_tags_name_the_file_and_problem(tmp_path, content, message):
    path = tmp_path / "tags.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as error:
        read_tags(path, CLASS_IDS)
    assert "tags.json" in str(error.value)


def test_dataset_reads_tags_from_a_file(sample_root, tmp_path):
    dataset = VOCDataset(sample_root)
    first, second = dataset.ids[:2]
    names = dataset.class_names
    (tmp_path / "tags.json").write_text(json.dumps({first: [names[3]]}))
    tagged = VOCDataset(sample_root, tags_file=tmp_path / "tags.json")
    assert tagged.load(first).tags == (3,)
    assert dataset.load(first).tags == tuple(sorted({b.class_id for b in dataset.load(first).boxes}))
    with pytest.raises(DataError, match=f"no tags for image '{second}'"):
        tagged.load(second)
