"""The training loop shared by the affinity CNN (docs/method.md §4) and the CAM network (§3).

SGD with momentum and polynomial learning-rate decay (power 0.9), the backbone at a tenth of the
head's rate, one checkpoint per epoch with resume, a progress bar with the running loss, a JSON
training log, and DistributedDataParallel when the process runs under ``torchrun``.

Files in ``out_dir``:

==================  ================================================================
``checkpoint.pt``   model, optimizer, scheduler, epoch and log after each epoch (resume)
``model.pt``        the trained weights (state dict); its presence marks training done
``train_log.json``  one entry per epoch: mean losses, learning rate, seconds
==================  ================================================================

Both ``.pt`` files hold only tensors and plain Python values and are read with
``torch.load(weights_only=True)`` (:func:`graphwsss.utils.checkpoint.load_safely`): a crafted
file is refused with an error naming it, never executed.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from graphwsss.data.errors import DataError
from graphwsss.settings import TrainingSettings
from graphwsss.utils.checkpoint import load_safely
from graphwsss.utils.io import atomic_path, atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger(__name__)

LossFunction = Callable[[nn.Module, dict], tuple[Tensor, dict[str, float]]]
BACKBONE_LR_FACTOR = 0.1
POLY_POWER = 0.9


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Backbone parameters (names starting with ``backbone.``) at ``lr / 10``, the rest at
    ``lr``; no weight decay on biases and normalisation weights."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = defaultdict(list)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups[(name.startswith("backbone."), parameter.ndim <= 1)].append(parameter)
    return [{"params": params, "lr": lr * (BACKBONE_LR_FACTOR if backbone else 1.0),
             "weight_decay": 0.0 if no_decay else weight_decay}
            for (backbone, no_decay), params in sorted(groups.items())]


def train_network(model: nn.Module, compute_loss: LossFunction, dataset: Dataset,
                  settings: TrainingSettings, out_dir: str | Path, device: torch.device, *,
                  seed: int = 0, collate_fn: Callable | None = None, description: str = "train",
                  show_progress: bool = True) -> nn.Module:
    """Train ``model`` on ``dataset`` for ``settings.epochs`` epochs; resume from ``out_dir``.

    Args:
        model: the network (unwrapped); moved to ``device``.
        compute_loss: ``(model, batch) -> (loss, {name: value})``; ``batch`` is the collated
            dict with tensors on ``device``; ``model`` may be the DDP wrapper, so call it, do
            not reach into it.
        dataset: map-style dataset of dicts; if it has ``set_epoch(epoch)`` it is called before
            each epoch (augmentation seeded per epoch).
        settings: schedule and loader options.
        out_dir: where checkpoints, the final weights and the log go.
        device: training device.
        seed: shuffling seed (with the epoch).

    Returns:
        The trained (unwrapped) model in evaluation mode. If ``out_dir/model.pt`` exists the
        weights are loaded from it and no training runs.
    """
    out_dir = Path(out_dir)
    final_path, checkpoint_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    model.to(device)
    if final_path.is_file():
        log.info("%s: trained weights found, loading %s", description, final_path)
        state = load_safely(final_path, f"{description} trained weights", device,
                            hint=f"delete it to train again from {checkpoint_path.name}")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise DataError(final_path, f"{description} weights do not match the network "
                                        f"({str(error).splitlines()[0]}); delete it to train "
                                        "again") from error
        return model.eval()
    if len(dataset) == 0:
        raise ValueError(f"{description}: the training set is empty")
    distributed = is_distributed()
    rank = dist.get_rank() if distributed else 0
    batch_size = max(1, min(settings.batch_size, len(dataset)))
    sampler = (DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if distributed
               else RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=settings.workers, collate_fn=collate_fn)
    if len(loader) == 0:
        raise ValueError(f"{description}: {len(dataset)} images give no full batch of "
                         f"{batch_size} on each of the processes")
    optimizer = torch.optim.SGD(parameter_groups(model, settings.lr, settings.weight_decay),
                                lr=settings.lr, momentum=settings.momentum)
    total_steps = settings.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total_steps) ** POLY_POWER)
    start_epoch, history = 0, []
    if checkpoint_path.is_file():
        start_epoch, history = _resume(checkpoint_path, device, description, model, optimizer,
                                       scheduler)
        log.info("%s: resuming from %s after epoch %d", description, checkpoint_path, start_epoch)
    wrapped = (DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
               if distributed else model)
    log.info("%s: %d images, %d epochs of %d steps (batch %d%s) on %s -> %s", description,
             len(dataset), settings.epochs, len(loader), batch_size,
             f" x {dist.get_world_size()} processes" if distributed else "", device, out_dir)
    for epoch in range(start_epoch, settings.epochs):
        started = time.perf_counter()
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if distributed:
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(seed * 1000 + epoch)
        wrapped.train()
        sums: dict[str, float] = defaultdict(float)
        progress = tqdm(loader, desc=f"{description} epoch {epoch + 1}/{settings.epochs}",
                        disable=not (show_progress and rank == 0), leave=False)
        for batch in progress:
            loss, logs = compute_loss(wrapped, _to_device(batch, device))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{description}: loss is {float(loss)} at epoch "
                                         f"{epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for name, value in {"loss": float(loss.detach()), **logs}.items():
                sums[name] += value
            progress.set_postfix(loss=f"{float(loss.detach()):.4f}")
        # Plain floats only: the log goes into checkpoint.pt, read back with weights_only=True.
        entry = {"epoch": epoch + 1, **{name: round(float(value) / len(loader), 6)
                                        for name, value in sums.items()},
                 "lr": float(scheduler.get_last_lr()[0]),
                 "seconds": round(time.perf_counter() - started, 2)}
        history.append(entry)
        log.info("%s: epoch %d/%d %s", description, epoch + 1, settings.epochs,
                 ", ".join(f"{key} {value}" for key, value in entry.items() if key != "epoch"))
        if rank == 0:
            _save(checkpoint_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                    "history": history})
            atomic_write(out_dir / "train_log.json", json.dumps(history, indent=1))
    if rank == 0:
        _save(final_path, model.state_dict())
        log.info("%s: trained weights -> %s", description, final_path)
    if distributed:
        dist.barrier()
    return model.eval()


def load_trained_weights(network: nn.Module, path: str | Path, device: torch.device | str,
                         what: str) -> nn.Module:
    """Load weights that :func:`train_network` wrote: ``model.pt``, a ``checkpoint.pt``, or a
    folder holding ``model.pt``. Returns ``network`` on ``device`` in evaluation mode.

    Raises :class:`~graphwsss.data.errors.DataError` naming the file when it is missing,
    unreadable, or does not match ``network`` (``what`` names the network in the message).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise DataError(path, f"{what} weights not found")
    state = load_safely(path, f"{what} weights", device)
    state = state.get("model", state) if isinstance(state, dict) else state
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise DataError(path, f"weights do not match the {what} "
                              f"({str(error).splitlines()[0]})") from error
    return network.to(device).eval()


def _resume(path: Path, device: torch.device, description: str, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore model, optimizer and scheduler from a ``checkpoint.pt``; return
    ``(epochs done, training log)``. A file that cannot be loaded safely or is not such a
    checkpoint is a :class:`DataError` naming it (deleting it restarts from the first epoch)."""
    restart = "delete it to restart this training from the first epoch"
    state = load_safely(path, f"the {description} resume checkpoint", device, hint=restart)
    keys = ("model", "optimizer", "scheduler", "epoch", "history")
    if not isinstance(state, dict) or any(key not in state for key in keys):
        raise DataError(path, f"not a {description} training checkpoint (it needs "
                              f"{', '.join(keys)}); {restart}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as error:
        raise DataError(path, f"the {description} checkpoint does not fit this network and "
                              f"settings ({str(error).splitlines()[0]}); {restart}") from error
    return int(state["epoch"]), list(state["history"])


def _save(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        torch.save(value, temporary)


def _to_device(batch, device: torch.device):
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


