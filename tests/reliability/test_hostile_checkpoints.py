"""``.pt`` files are loaded with ``weights_only=True``: a pickle that would run code (here: create
a file) is refused with an error naming it, and creates nothing."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from graphwsss.data import DataError
from graphwsss.settings import TrainingSettings
from graphwsss.stages.affinity import load_affinity_network
from graphwsss.training import load_trained_weights, train_network
from graphwsss.utils.checkpoint import load_safely
from tests.reliability.conftest import set_split


class CreatesFile:
    """Unpickling this calls ``open(marker, "w")``: a file appears if the pickle runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted(path, marker, legacy=False):
    payload = {"model": {"weight": CreatesFile(marker)}, "epoch": 1}
    if legacy:                               # a plain pickle, as torch.save wrote before 1.6
        with open(path, "wb") as file:
            pickle.dump(payload, file)
    else:
        torch.save(payload, path)
    return path


def test_the_payload_is_live(tmp_path):
    """Sanity: loading the crafted file the unsafe way does create the marker."""
    marker = tmp_path / "pwned"
    torch.load(crafted(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_crafted_weights_are_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = crafted(tmp_path / "evil.pt", marker, legacy)
    with pytest.raises(DataError, match="cannot load") as error:
        load_safely(path, "weights")
    assert str(error.value).startswith(f"{path}: ")
    assert len(str(error.value).splitlines()) == 1
    with pytest.raises(DataError, match="evil.pt: cannot load .*affinity network weights"):
        load_affinity_network(path, "cpu")
    assert not marker.exists()


def test_crafted_checkpoint_setting_stops_a_run(sample_copy, run_cli, tmp_path):
    """``cam.training.checkpoint=<crafted>``: the first stage refuses it, exit code 2."""
    set_split(sample_copy, ["10_10_s"])
    marker = tmp_path / "pwned"
    path = crafted(tmp_path / "evil.pt", marker)
    code, line, _ = run_cli(sample_copy, f"cam.training.checkpoint={path}",
                            supervision="image")
    assert code == 2 and not marker.exists()
    assert line.startswith(f"graphwsss: error: {path}: cannot load")
    assert "unpickling it could run code" in line


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        return self.head(self.backbone(x)).squeeze(-1)


class Points(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        return {"x": torch.tensor([index / 8, 1.0]), "y": torch.tensor(index / 8)}


def squared_error(model, batch):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return loss, {"mse": float(loss.detach())}


SETTINGS = TrainingSettings(epochs=2, batch_size=4, lr=0.01, weight_decay=0.0)


def _train(out_dir):
    return train_network(Tiny(), squared_error, Points(), SETTINGS, out_dir,
                         torch.device("cpu"), show_progress=False)


def test_checkpoints_hold_only_tensors_and_plain_values(tmp_path):
    _train(tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert all(type(value) in (int, float) for entry in state["history"]
               for value in entry.values())
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == set(Tiny().state_dict())


@pytest.mark.parametrize("name", ["checkpoint.pt", "model.pt"])
def test_crafted_resume_files_are_refused(tmp_path, name):
    marker = tmp_path / "pwned"
    crafted(tmp_path / name, marker)
    with pytest.raises(DataError, match=f"{name}: cannot load .*delete it"):
        _train(tmp_path)
    assert not marker.exists()


def test_old_checkpoint_with_objects_fails_clearly_and_restarts_once_deleted(tmp_path):
    """A checkpoint holding more than plain values (here a settings dataclass, as pickled by
    older code) is refused with a message saying how to go on; deleting it restarts."""
    network = Tiny()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    torch.save({"model": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": {}, "epoch": 1, "history": [], "settings": SETTINGS},
               tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match=r"checkpoint\.pt: cannot load the train resume "
                                        r"checkpoint: .*TrainingSettings.*; delete it to restart "
                                        r"this training from the first epoch"):
        _train(tmp_path)
    (tmp_path / "checkpoint.pt").unlink()
    _train(tmp_path)
    assert (tmp_path / "model.pt").is_file()


def test_checkpoint_of_another_shape_is_named(tmp_path):
    torch.save({"model": {}, "epoch": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match=r"checkpoint\.pt: not a train training checkpoint"):
        _train(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(DataError, match=r"checkpoint\.pt: cannot load .*empty or truncated"):
        _train(tmp_path)
    torch.save([torch.zeros(1)], tmp_path / "weights.pt")
    with pytest.raises(DataError, match=r"weights\.pt: weights do not match the tiny"):
        load_trained_weights(Tiny(), tmp_path / "weights.pt", "cpu", "tiny")
