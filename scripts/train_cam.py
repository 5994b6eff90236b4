#!/usr/bin/env python
"""Train the CAM seed network (docs/method.md §3) and infer its CAMs, alone or under ``torchrun``.

Tags are the classes of each image's boxes (``Annotations``); ``cam.pooling=bap`` trains on the
boxes themselves. Training resumes from ``<out>/checkpoint.pt``; the weights end in
``<out>/model.pt`` and the CAMs in ``<out>/cams/<id>.npy`` (float16 ``[K, H, W]`` in ``[0, 1]``;
existing files are kept). ``--evaluate`` then scores them (as ``graphwsss evaluate-cam``) into
``<out>/cam_metrics.json``. Examples::

    python scripts/train_cam.py --data DIR --out outputs/cam_is_fsl
    python scripts/train_cam.py --data DIR --out OUT --evaluate cam.pooling=gap cam.fsl=none \\
        cam.output_stride=16 cam.training.epochs=3
    torchrun --nproc_per_node 2 scripts/train_cam.py --data DIR --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from graphwsss.settings import load_run_settings
from graphwsss.stages.cam import infer_cams, train_cam
from graphwsss.stages.evaluate import format_table, write_metrics
from graphwsss.stages.evaluate_cam import evaluate_cams
from graphwsss.stages.run import open_dataset
from graphwsss.utils.distributed import setup_process
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger

log = get_logger("train_cam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--out", required=True, help="training and CAM folder")
    parser.add_argument("--config", help="YAML settings (configs/*.yaml)")
    parser.add_argument("--skip-inference", action="store_true", help="train only")
    parser.add_argument("--evaluate", action="store_true",
                        help="score the CAMs against the ground truth afterwards")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    settings = load_run_settings(args.config, args.overrides)
    device, context = setup_process(settings.device, settings.seed)
    dataset, image_ids = open_dataset(args.data, settings)
    out = Path(args.out)
    if context.is_main:
        atomic_write(out / "cam_settings.json",
                     json.dumps({"data": str(args.data), "overrides": args.overrides}, indent=1))
    network = train_cam(dataset, image_ids, out, settings, device, show_progress=context.is_main)
    if context.is_main:
        log.info("CAM network weights in %s", out / "model.pt")
    if args.skip_inference:
        return
    infer_cams(network, dataset, context.shard(image_ids), out, settings, device,
               show_progress=context.is_main)
    context.barrier()
    if args.evaluate and context.is_main:
        metrics = evaluate_cams(args.data, out, split=settings.split)
        print(format_table(metrics))
        print(f"mIoU {metrics['miou']:.2f}  contour F {metrics['contour_f']:.2f}  "
              f"best threshold {metrics['best_threshold']:.2f}")
        write_metrics(out / "cam_metrics.json", metrics)
        log.info("CAM metrics in %s", out / "cam_metrics.json")


if __name__ == "__main__":
    main()
