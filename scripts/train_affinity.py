#!/usr/bin/env python
"""Train the affinity CNN (docs/method.md §4) on a data set's seeds, alone or under ``torchrun``.

Seeds are ``<seeds>/<id>.png`` (0 background, 1..K classes, 255 unknown), e.g. the ``seeds/``
folder of an earlier ``graphwsss run``; without ``--seeds`` the box seeds of §2 (GrabCut in the
boxes) are computed first into ``<out>/seeds``. The default ``affinity.mode=cached`` trains the
head of a frozen backbone on features cached once per image and mirror (minutes on one CPU
thread, ``affinity.steps``); ``affinity.mode=finetune`` fine-tunes the last three levels and
resumes from ``<out>/checkpoint.pt``. The weights end in ``<out>/model.pt``, which
``graphwsss run ... graph.builder=affinity affinity.training.checkpoint=<out>/model.pt`` uses
without retraining (either architecture). Examples::

    python scripts/train_affinity.py --data DIR --out outputs/affinity
    torchrun --nproc_per_node 2 scripts/train_affinity.py --data DIR --seeds RUN/seeds --out OUT \\
        affinity.training.epochs=8
"""

from __future__ import annotations

import argparse
from pathlib import Path


from graphwsss.settings import load_run_settings
from graphwsss.stages.affinity import train_affinity
from graphwsss.stages import seeds as seeds_stage
from graphwsss.stages.paths import RunContext, RunPaths
from graphwsss.stages.run import open_dataset
from graphwsss.utils.distributed import setup_process
from graphwsss.utils.runtime import get_logger

log = get_logger("train_affinity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--out", required=True, help="training folder")
    parser.add_argument("--seeds", help="folder of <id>.png seed maps (default: box seeds)")
    parser.add_argument("--config", help="YAML settings (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    settings = load_run_settings(args.config, args.overrides)
    device, context = setup_process(settings.device, settings.seed)
    dataset, image_ids = open_dataset(args.data, settings)
    out = Path(args.out)
    seeds = Path(args.seeds) if args.seeds else out / "seeds"
    if not args.seeds:
        ctx = RunContext(dataset, RunPaths(out), settings, device, context.is_main)
        seeds_stage.run(ctx, context.shard(image_ids))
        context.barrier()
    train_affinity(dataset, image_ids, seeds, out, settings, device, show_progress=context.is_main)
    if context.is_main:
        log.info("affinity CNN weights in %s", out / "model.pt")


if __name__ == "__main__":
    main()
