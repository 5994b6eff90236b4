"""The ``graphwsss`` command line: ``run``, ``evaluate``, ``fill-boxes``, ``info``, ``demo``."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path

from graphwsss import __version__
from graphwsss.config import ConfigError
from graphwsss.data.errors import DataError
from graphwsss.utils.runtime import get_logger

SAMPLE_DATA = Path(__file__).parent / "sample_data" / "msrc-sample"
log = get_logger("graphwsss.cli")


def _info(_: argparse.Namespace) -> int:
    import numpy
    import torch
    import torch_geometric

    def present(module: str) -> str:
        return "yes" if importlib.util.find_spec(module) is not None else "no"

    rows = {
        "graphwsss": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "numpy": numpy.__version__,
        "device (auto)": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda devices": str(torch.cuda.device_count()),
        "torch_scatter": present("torch_scatter"),
        "torch_sparse": present("torch_sparse"),
        "pydensecrf": present("pydensecrf"),
        "sample data": str(SAMPLE_DATA),
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from graphwsss.stages.evaluate import evaluate_folder, format_table, write_metrics

    metrics = evaluate_folder(args.data, args.pred, split=args.split)
    print(format_table(metrics))
    print(f"images {metrics['images']}  mIoU {metrics['miou']:.2f}  "
          f"contour F {metrics['contour_f']:.2f}")
    if args.out:
        write_metrics(args.out, metrics)
        log.info("metrics written to %s", args.out)
    return 0


def _fill_boxes(args: argparse.Namespace) -> int:
    from graphwsss.stages import filled_boxes

    out = filled_boxes.run(args.data, args.out, split=args.split, limit=args.limit)
    log.info("filled-box labels written to %s", out)
    return 0


def _run(args: argparse.Namespace) -> int:
    from graphwsss.config import load_config
    from graphwsss.settings import RunSettings
    from graphwsss.stages.run import run

    overrides = [f"supervision={args.supervision}", *args.overrides]
    settings = load_config(RunSettings, args.config, overrides)
    metrics = run(args.data, args.out, settings)
    if metrics is not None:
        print(f"images {metrics['images']}  mIoU {metrics['miou']:.2f}  "
              f"contour F {metrics['contour_f']:.2f}  seconds {metrics['seconds']:.1f}")
    print(f"outputs in {args.out}: pseudo_labels/, instances/, config.yaml, report.html"
          + (", metrics.json" if metrics is not None else ""))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from graphwsss.settings import RunSettings
    from graphwsss.stages.run import run

    log.info("demo: box-supervised label propagation on the bundled sample (%s)", SAMPLE_DATA)
    metrics = run(SAMPLE_DATA, args.out, RunSettings(supervision="box"))
    print(f"\nA²GNN + CRF pseudo labels of {metrics['images']} sample images: mIoU "
          f"{metrics['miou']:.1f}, contour F {metrics['contour_f']:.1f} "
          f"(GrabCut seeds: precision {metrics['seed_precision']:.1f}, "
          f"coverage {metrics['seed_coverage']:.1f}); {metrics['seconds']:.0f} s")
    out = Path(args.out)
    print(f"outputs: {out / 'pseudo_labels'}, {out / 'instances'}, {out / 'metrics.json'}, "
          f"{out / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphwsss",
        description="Weak labels (boxes, scribbles, points, tags) to dense segmentation labels "
                    "by propagation over learned pixel graphs.")
    parser.add_argument("--version", action="version", version=f"graphwsss {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="versions, device, optional extras")
    info.set_defaults(handler=_info)

    evaluate = commands.add_parser("evaluate", help="score label PNGs against the ground truth")
    evaluate.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    evaluate.add_argument("--pred", required=True, help="folder of <id>.png predictions")
    evaluate.add_argument("--out", help="write the metrics as JSON here")
    evaluate.add_argument("--split", default="train", help="ImageSets/Segmentation list")
    evaluate.set_defaults(handler=_evaluate)

    fill = commands.add_parser("fill-boxes", help="write the filled-box baseline labels")
    fill.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    fill.add_argument("--out", required=True, help="output folder for <id>.png")
    fill.add_argument("--split", default="train")
    fill.add_argument("--limit", type=int, help="first N images only")
    fill.set_defaults(handler=_fill_boxes)

    run = commands.add_parser(
        "run", help="weak labels to pseudo labels: every stage, resumable",
        description="Run every stage and write <out>/pseudo_labels/<id>.png, <out>/instances/, "
                    "<out>/config.yaml, <out>/metrics.json (with ground truth) and "
                    "<out>/report.html. Rerunning resumes. Settings: --config YAML, then "
                    "key=value overrides such as graph.builder=rgbxy propagator.name=gcn "
                    "crf.enabled=false device=cpu limit=10.")
    run.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    run.add_argument("--supervision", required=True, choices=["box"], help="kind of weak label")
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--config", help="YAML settings (configs/box_*.yaml)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="setting overrides")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="run the main job on the bundled sample")
    demo.add_argument("--out", default="outputs/demo", help="output folder")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (DataError, ConfigError) as error:
        print(f"graphwsss: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
