"""Run under ``torchrun`` by tests/training/test_loop.py: train the affinity CNN for a few steps
with DistributedDataParallel and save this rank's weights to ``<out>/rank<r>.pt``."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

import graphwsss  # noqa: F401
from graphwsss.config import load_config
from graphwsss.data.voc import VOCDataset
from graphwsss.settings import RunSettings
from graphwsss.stages.affinity import train_affinity
from graphwsss.stages import seeds
from graphwsss.stages.paths import RunContext, RunPaths
from graphwsss.utils.distributed import init_distributed


def main() -> None:
    data, out = sys.argv[1], Path(sys.argv[2])
    context = init_distributed("cpu")
    torch.manual_seed(context.rank)          # different on purpose: DDP must broadcast rank 0's
    settings = load_config(RunSettings, None, [
        "limit=4", "affinity.mode=finetune", "affinity.training.epochs=1", "affinity.training.batch_size=1",
        "affinity.training.crop_size=48", "backbone.weights=null"])
    dataset = VOCDataset(data)
    ids = dataset.ids[:4]
    seeds.run(RunContext(dataset, RunPaths(out), settings, torch.device("cpu"), False),
              context.shard(ids))
    context.barrier()
    network = train_affinity(dataset, ids, out / "seeds", out / "affinity", settings,
                             torch.device("cpu"), show_progress=False)
    torch.save(network.state_dict(), out / f"rank{context.rank}.pt")
    dist.barrier()


if __name__ == "__main__":
    main()
