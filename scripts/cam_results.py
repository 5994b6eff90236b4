#!/usr/bin/env python
"""Reproduce the CAM table of docs/results.md: every pooling with and without the FSL (§3).

Trains one CAM network per variant on the data set's tags, infers its CAMs and scores them with
the background-threshold sweep of ``graphwsss evaluate-cam`` (the default 0.00–0.59, and a wide
0.00–0.95 sweep, since softmax CAMs often peak above 0.59). Variants run one after another in
``<out>/<pooling>_fsl-<fsl>/``; a finished variant (its ``cam_metrics.json`` exists) is not
rerun, an interrupted one resumes from its checkpoint. Prints a Markdown table and writes it to
``<out>/table.md`` and ``<out>/table.json``. Example (the schedule of docs/results.md)::

    python scripts/cam_results.py --data ../shared/data/msrc-objects --out outputs/cam_table \\
        cam.output_stride=16 cam.training.crop_size=224 cam.training.epochs=3 \\
        cam.inference_scales=[1.0] device=cpu
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from graphwsss.settings import load_run_settings
from graphwsss.stages.cam import infer_cams, train_cam
from graphwsss.stages.evaluate import write_metrics
from graphwsss.stages.evaluate_cam import DEFAULT_THRESHOLDS, evaluate_cams
from graphwsss.stages.run import open_dataset
from graphwsss.utils.io import atomic_write
from graphwsss.utils.runtime import get_logger, resolve_device, seed_everything

log = get_logger("cam_results")

# (pooling, FSL): the FSL variant follows the CAM's activation (softmax: multinomial, sigmoid:
# binomial), see graphwsss.losses.importance_sampling.
VARIANTS = [("gap", "none"), ("gap", "binomial"), ("gmp", "none"), ("gmp", "multinomial"),
            ("is", "none"), ("is", "multinomial"), ("is_binomial", "none"),
            ("is_binomial", "binomial")]
WIDE_THRESHOLDS = [step / 100 for step in range(96)]


def run_variant(data: str, out: Path, base: list[str], pooling: str, fsl: str,
                config: str | None) -> dict:
    """Train, infer and score one variant in ``out``; resumes what an earlier call left."""
    if (out / "cam_metrics.json").is_file():
        return _row(out, pooling, fsl, wall=None)
    overrides = [*base, f"cam.pooling={pooling}", f"cam.fsl={fsl}"]
    settings = load_run_settings(config, overrides)
    seed_everything(settings.seed)
    device = resolve_device(settings.device)
    dataset, image_ids = open_dataset(data, settings)
    atomic_write(out / "cam_settings.json",
                 json.dumps({"data": data, "overrides": overrides}, indent=1))
    started = time.perf_counter()
    log.info("variant %s + FSL %s -> %s", pooling, fsl, out)
    network = train_cam(dataset, image_ids, out, settings, device)
    infer_cams(network, dataset, image_ids, out, settings, device)
    wide = evaluate_cams(data, out, split=settings.split, thresholds=WIDE_THRESHOLDS)
    write_metrics(out / "cam_metrics_wide.json", wide)
    # Written last: its presence marks the variant as done.
    write_metrics(out / "cam_metrics.json",
                  evaluate_cams(data, out, split=settings.split, thresholds=DEFAULT_THRESHOLDS))
    return _row(out, pooling, fsl, wall=time.perf_counter() - started)


def _row(out: Path, pooling: str, fsl: str, wall: float | None) -> dict:
    metrics = json.loads((out / "cam_metrics.json").read_text())
    wide_path = out / "cam_metrics_wide.json"
    wide = json.loads(wide_path.read_text()) if wide_path.is_file() else None
    log_path = out / "train_log.json"
    epochs = json.loads(log_path.read_text()) if log_path.is_file() else []
    return {"pooling": pooling, "fsl": fsl, "miou": metrics["miou"],
            "contour_f": metrics["contour_f"], "best_threshold": metrics["best_threshold"],
            "wide_miou": wide and wide["miou"], "wide_contour_f": wide and wide["contour_f"],
            "wide_best_threshold": wide and wide["best_threshold"],
            "training_seconds": sum(epoch["seconds"] for epoch in epochs),
            "wall_seconds": wall}


def format_rows(rows: list[dict]) -> str:
    def number(value, digits=1):
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["| pooling | FSL | mIoU | contour F | best t | mIoU (t ≤ 0.95) | contour F (t ≤ 0.95) "
             "| best t (≤ 0.95) | training (s) | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['pooling']} | {row['fsl']} | {number(row['miou'])} | "
            f"{number(row['contour_f'])} | {number(row['best_threshold'], 2)} | "
            f"{number(row['wide_miou'])} | {number(row['wide_contour_f'])} | "
            f"{number(row['wide_best_threshold'], 2)} | {number(row['training_seconds'], 0)} | "
            f"{number(row['wall_seconds'], 0)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    parser.add_argument("--out", required=True, help="one folder per variant below this")
    parser.add_argument("--config", help="base YAML (default: the built-in defaults)")
    parser.add_argument("--variants", metavar="POOLING:FSL,...",
                        default=",".join(f"{pooling}:{fsl}" for pooling, fsl in VARIANTS),
                        help="comma-separated subset, e.g. gap:none,is:multinomial")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="settings for every variant (cam.pooling and cam.fsl are set here)")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for variant in args.variants.split(","):
        pooling, _, fsl = variant.partition(":")
        if not fsl:
            parser.error(f"variant {variant!r} is not POOLING:FSL (e.g. is:multinomial)")
        rows.append(run_variant(args.data, out / f"{pooling}_fsl-{fsl}", args.overrides,
                                pooling, fsl, args.config))
        table = format_rows(rows)
        atomic_write(out / "table.md", table + "\n")
        atomic_write(out / "table.json", json.dumps(rows, indent=1))
    print(table)
    log.info("table in %s", out / "table.md")


if __name__ == "__main__":
    main()
