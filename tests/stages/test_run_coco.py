"""Issue 15: ``graphwsss run`` on COCO input, scored with pycocotools."""

import importlib.util
import json
from pathlib import Path

import pytest

from graphwsss.cli import main

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
FAST = ["propagator.epochs_first=5", "propagator.epochs_second=5", "device=cpu", "limit=3"]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("single_thread")
def test_coco_run_writes_annotations_with_masks_that_beat_filled_boxes(tmp_path, sample_root,
                                                                      capsys):
    """A COCO copy of the sample (masks from SegmentationObject) in, ``annotations.json`` out:
    the input file with one RLE mask per box, ids kept, crowd annotations left alone, and a
    mask AP well above that of the filled boxes."""
    convert = _script("voc_to_coco").convert
    scorer = _script("coco_mask_ap")
    gt_file = convert(sample_root, tmp_path / "coco")
    content = json.loads(gt_file.read_text())
    # Distinct, non-contiguous ids as a real file has them; a crowd region that is no weak label.
    for annotation in content["annotations"]:
        annotation["id"] += 1000
        annotation["category_id"] *= 10
    for category in content["categories"]:
        category["id"] *= 10
    first = content["annotations"][0]
    content["annotations"].append({**first, "id": 1, "iscrowd": 1})
    content["info"]["note"] = "kept"
    gt_file.write_text(json.dumps(content))

    out = tmp_path / "run"
    code = main(["run", "--data", str(tmp_path / "coco"), "--supervision", "box", "--out",
                 str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    written = json.loads((out / "annotations.json").read_text())
    image_ids = [image["id"] for image in written["images"]]
    assert len(image_ids) == 3 and written["info"]["note"] == "kept"
    assert written["categories"] == content["categories"]
    kept = [a for a in content["annotations"] if a["image_id"] in image_ids]
    assert [a["id"] for a in written["annotations"]] == [a["id"] for a in kept]
    for before, after in zip(kept, written["annotations"]):
        assert after["bbox"] == before["bbox"] and after["category_id"] == before["category_id"]
        if before.get("iscrowd"):
            assert after == before
        else:
            assert isinstance(after["segmentation"]["counts"], str)
    results = json.loads((out / "instances" / "instances.json").read_text())
    assert {r["image_id"] for r in results} <= set(image_ids)
    assert {r["category_id"] for r in results} <= {c["id"] for c in content["categories"]}
    metrics = json.loads((out / "metrics.json").read_text())      # the masks are ground truth
    assert metrics["images"] == 3

    run_ap = scorer.segm_ap(str(gt_file), scorer.as_results(written), image_ids)
    box_ap = scorer.segm_ap(str(gt_file), scorer.as_results(written, filled_boxes=True), image_ids)
    # The first three sample images: about 56 against 20 (a tight mask against its box).
    assert run_ap["AP"] > box_ap["AP"] + 20, (run_ap, box_ap)
