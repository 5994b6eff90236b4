"""``seeds.source=files`` (issue 15.2): another tool's seeds, refined by graph and propagation."""

import json

import numpy as np
from PIL import Image

from graphwsss.cli import main
from graphwsss.data import VOCDataset, read_label_png, write_label_png
from graphwsss.settings import RunSettings
from graphwsss.stages.manifest import stage_keys

TINY = ["limit=1", "propagator.epochs_first=1", "propagator.epochs_second=1",
        "crf.enabled=false", "device=cpu"]


def _run(sample_root, out, *overrides):
    return main(["run", "--data", str(sample_root), "--supervision", "box", "--out", str(out),
                 *TINY, *overrides])


def test_label_and_mask_files_become_the_seeds(tmp_path, sample_root):
    dataset = VOCDataset(sample_root)
    image_id = dataset.ids[0]
    truth = dataset.ground_truth(image_id)
    labels = np.where(np.arange(truth.shape[0])[:, None] % 3 == 0, truth, 255).astype(np.uint8)
    write_label_png(tmp_path / "labels" / f"{image_id}.png", labels)
    assert _run(sample_root, tmp_path / "run", "seeds.source=files",
                f"seeds.dir={tmp_path / 'labels'}") == 0
    run = tmp_path / "run"
    assert np.array_equal(read_label_png(run / "seeds" / f"{image_id}.png"), labels)
    assert read_label_png(run / "pseudo_labels" / f"{image_id}.png").shape == truth.shape
    recorded = json.loads((run / "stages.json").read_text())["seeds"]["settings"]
    assert recorded["seeds.source"] == "files" and recorded["seeds.file_kind"] == "labels"

    mask = ((truth != 0) & (truth != 255)).astype(np.uint8) * 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / f"{image_id}.png")
    assert _run(sample_root, tmp_path / "mask_run", "seeds.source=files", "seeds.file_kind=mask",
                f"seeds.dir={tmp_path / 'masks'}") == 0
    seeds = read_label_png(tmp_path / "mask_run" / "seeds" / f"{image_id}.png")
    classes = {box.class_id for box in dataset.load(image_id).boxes}
    assert set(np.unique(seeds[mask > 0])) <= classes | {255}
    assert (seeds[mask == 0] == 0).all()


def test_seed_file_errors_name_the_file(tmp_path, sample_root, capsys):
    image_id = VOCDataset(sample_root).ids[0]
    (tmp_path / "seeds").mkdir()
    assert _run(sample_root, tmp_path / "r1", "seeds.source=files",
                f"seeds.dir={tmp_path / 'seeds'}") == 2
    assert f"{image_id}.png: seed file is missing" in capsys.readouterr().err
    write_label_png(tmp_path / "seeds" / f"{image_id}.png", np.zeros((5, 5), np.uint8))
    assert _run(sample_root, tmp_path / "r2", "seeds.source=files",
                f"seeds.dir={tmp_path / 'seeds'}") == 2
    assert "seed file size 5x5 differs from the image's" in capsys.readouterr().err
    assert _run(sample_root, tmp_path / "r3", "seeds.source=files") == 2
    assert "seeds.source=files needs seeds.dir" in capsys.readouterr().err
    assert _run(sample_root, tmp_path / "r4", "seeds.source=files",
                f"seeds.dir={tmp_path / 'absent'}") == 2
    assert "seeds.dir is not a folder" in capsys.readouterr().err


def test_seed_stage_keys_include_the_file_settings():
    settings = RunSettings()
    keys = stage_keys(settings)["seeds"]
    assert {"seeds.source", "seeds.dir", "seeds.file_kind"} <= set(keys)
    from dataclasses import replace
    files = replace(settings, supervision="point",
                    seeds=replace(settings.seeds, source="files", dir="x"))
    assert "cam" not in stage_keys(files)       # seeds from files: no CAM network to train
