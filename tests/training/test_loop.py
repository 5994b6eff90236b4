import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from graphwsss.settings import TrainingSettings
from graphwsss.training import parameter_groups, train_network


class Toy(Dataset):
    def __init__(self, count=12):
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(count, 3, generator=generator)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
        self.epochs = []

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "y": self.y[index]}


class ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.backbone(x)).squeeze(-1)


def mse(model, batch):
    loss = ((model(batch["x"]) - batch["y"]) ** 2).mean()
    return loss, {"mse": float(loss.detach())}


SETTINGS = dict(batch_size=4, lr=0.05, weight_decay=0.0)


def test_training_lowers_the_loss_and_writes_its_files(tmp_path):
    dataset = Toy()
    model = train_network(ToyModel(), mse, dataset, TrainingSettings(epochs=5, **SETTINGS),
                          tmp_path, torch.device("cpu"), show_progress=False)
    history = json.loads((tmp_path / "train_log.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3, 4, 5]
    assert history[-1]["loss"] < history[0]["loss"]
    assert dataset.epochs == [0, 1, 2, 3, 4]
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "checkpoint.pt").is_file()
    assert not model.training


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    straight = train_network(ToyModel(), mse, Toy(), TrainingSettings(epochs=3, **SETTINGS),
                             tmp_path / "a", torch.device("cpu"), show_progress=False)
    # The same run interrupted in epoch 3, then started again: it resumes after epoch 2.
    resumed_dir = tmp_path / "c"
    calls = {"n": 0}

    def failing(model, batch):
        calls["n"] += 1
        if calls["n"] > 6:                   # 3 steps per epoch: fail in epoch 3
            raise KeyboardInterrupt
        return mse(model, batch)

    with pytest.raises(KeyboardInterrupt):
        train_network(ToyModel(), failing, Toy(), TrainingSettings(epochs=3, **SETTINGS),
                      resumed_dir, torch.device("cpu"), show_progress=False)
    assert not (resumed_dir / "model.pt").exists()
    assert torch.load(resumed_dir / "checkpoint.pt", weights_only=True)["epoch"] == 2
    resumed = train_network(ToyModel(), mse, Toy(), TrainingSettings(epochs=3, **SETTINGS),
                            resumed_dir, torch.device("cpu"), show_progress=False)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_finished_training_is_loaded_not_repeated(tmp_path):
    trained = train_network(ToyModel(), mse, Toy(), TrainingSettings(epochs=2, **SETTINGS),
                            tmp_path, torch.device("cpu"), show_progress=False)

    def never(model, batch):
        raise AssertionError("training ran again")

    fresh = ToyModel()
    loaded = train_network(fresh, never, Toy(), TrainingSettings(epochs=2, **SETTINGS), tmp_path,
                           torch.device("cpu"), show_progress=False)
    assert torch.equal(loaded.head.weight, trained.head.weight)


def test_backbone_learns_at_a_tenth_of_the_rate_and_biases_skip_decay():
    groups = parameter_groups(ToyModel(), lr=0.1, weight_decay=1e-4)
    by_rate = {(round(group["lr"], 6), group["weight_decay"]): len(group["params"])
               for group in groups}
    assert by_rate == {(0.01, 1e-4): 1, (0.01, 0.0): 1, (0.1, 1e-4): 1, (0.1, 0.0): 1}


def test_empty_or_too_small_data_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        train_network(ToyModel(), mse, Toy(0), TrainingSettings(epochs=1), tmp_path,
                      torch.device("cpu"), show_progress=False)


def test_ddp_replicas_stay_equal(tmp_path, sample_root):
    """Two gloo processes train the affinity CNN with DDP; their weights end equal."""
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", "29531", str(worker), str(sample_root), str(tmp_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    initial = torch.load(tmp_path / "affinity" / "model.pt")
    assert torch.equal(initial["mix.weight"], rank0["mix.weight"])
    history = json.loads((tmp_path / "affinity" / "train_log.json").read_text())
    assert history[0]["epoch"] == 1 and history[0]["loss"] > 0
