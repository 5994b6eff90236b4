"""The ``graphwsss`` command line: ``run``, ``evaluate``, ``analyze``, ``fill-boxes``, ..."""

from __future__ import annotations

import argparse
import dataclasses
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

    if args.limit is not None and args.limit < 0:
        print(f"graphwsss: error: --limit must be >= 0 (0: every image), got {args.limit}",
              file=sys.stderr)
        return 2
    metrics = evaluate_folder(args.data, args.pred, split=args.split, partial=args.partial,
                              limit=args.limit)
    print(format_table(metrics))
    skipped = metrics.get("images_without_prediction", 0)
    print(f"images {metrics['images']}  mIoU {metrics['miou']:.2f}  "
          f"contour F {metrics['contour_f']:.2f}"
          + (f"  ({skipped} images of the split without a prediction skipped)" if skipped else ""))
    if args.out:
        write_metrics(args.out, metrics)
        log.info("metrics written to %s", args.out)
    return 0


def _evaluate_cam(args: argparse.Namespace) -> int:
    from graphwsss.stages.evaluate import format_table, write_metrics
    from graphwsss.stages.evaluate_cam import evaluate_cams

    if not 0.0 <= args.max_threshold < 1.0:
        print(f"graphwsss: error: --max-threshold must lie in [0, 1), got {args.max_threshold}",
              file=sys.stderr)
        return 2
    steps = int(round(args.max_threshold * 100)) + 1
    metrics = evaluate_cams(args.data, args.run, split=args.split,
                            thresholds=[step / 100 for step in range(steps)])
    print(format_table(metrics))
    print(f"images {metrics['images']}  mIoU {metrics['miou']:.2f}  "
          f"contour F {metrics['contour_f']:.2f}  best threshold {metrics['best_threshold']:.2f}")
    out = args.out or str(Path(args.run) / "cam_metrics.json")
    write_metrics(out, metrics)
    log.info("CAM metrics written to %s", out)
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from graphwsss.stages.analyze import analyze_run, format_report, write_analysis

    result = analyze_run(args.data, args.run, against=args.against, split=args.split)
    print(format_report(result))
    out = args.out or str(Path(args.run) / "analysis.json")
    write_analysis(out, result)
    log.info("analysis written to %s", out)
    return 0


def _fill_boxes(args: argparse.Namespace) -> int:
    from graphwsss.stages import filled_boxes

    if args.limit is not None and args.limit < 0:
        print(f"graphwsss: error: --limit must be >= 0 (0: every image), got {args.limit}",
              file=sys.stderr)
        return 2
    out = filled_boxes.run(args.data, args.out, split=args.split, limit=args.limit)
    log.info("filled-box labels written to %s", out)
    return 0


def _check_run_folder(out: str, force: bool = False) -> None:
    """Refuse an ``--out`` that is (or lies under) an existing file, or, unless ``force``, an
    existing folder that holds other files and is not a graphwsss run, before anything runs."""
    for path in (Path(out), *Path(out).parents):
        if path.exists():
            if not path.is_dir():
                raise DataError(path, "--out must name a run folder, but this is an existing "
                                      "file" + ("" if path == Path(out) else f" (in {out})"))
            if path == Path(out) and not force and any(path.iterdir()) \
                    and not _is_run_folder(path):
                raise DataError(path, "--out is a folder that holds other files and is not a "
                                      "graphwsss run (no run's config.yaml); name a new or empty "
                                      "folder, or add --force to write into this one")
            return


def _is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds the ``config.yaml`` of a ``graphwsss run`` (its settings)."""
    import yaml

    try:
        values = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(values, dict) and {"supervision", "graph", "propagator"} <= set(values)


def _run(args: argparse.Namespace) -> int:
    from graphwsss.settings import load_run_settings

    from graphwsss.stages.manifest import parse_stages

    stages = parse_stages(args.stages) if args.stages is not None else None
    _check_run_folder(args.out, force=args.force)
    if stages is not None and not _is_run_folder(Path(args.out)):
        raise DataError(args.out, "--stages reruns stages of an earlier run, but --out holds no "
                                  "run (no run's config.yaml); run without --stages first")
    settings = load_run_settings(args.config, args.overrides, supervision=args.supervision)
    from graphwsss.stages.run import run     # after the settings: a bad one fails fast

    metrics = run(args.data, args.out, settings, force=args.force, images=args.images,
                  stages=stages)
    if metrics is not None:
        print(f"images {metrics['images']}  mIoU {metrics['miou']:.2f}  "
              f"contour F {metrics['contour_f']:.2f}  seconds {metrics['seconds']:.1f}")
    out = Path(args.out)
    made = [f"{name}/" if (out / name).is_dir() else name
            for name in ("pseudo_labels", "instances", "probabilities", "config.yaml", "report.html",
                         "metrics.json", "annotations.json") if (out / name).exists()]
    print(f"outputs in {args.out}: {', '.join(made)}"
          + (" (annotations.json: COCO, with masks)" if "annotations.json" in made else ""))
    return 0


def _train_segmenter(args: argparse.Namespace) -> int:
    from graphwsss.settings import load_run_settings
    from graphwsss.stages import segment

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError(args.out, "--out must name a folder, but this is an existing file")
    settings = load_run_settings(args.config, args.overrides)
    from graphwsss.stages.run import open_dataset
    from graphwsss.utils.distributed import setup_process

    device, context = setup_process(settings.device, settings.seed)
    dataset, image_ids = open_dataset(args.data, settings)
    labels = segment.LabelSource.open(args.labels, dataset.num_classes)
    if labels.probabilities is not None and labels.supervision != settings.supervision:
        # Y' is restricted to the run's weak labels: load those (scribbles, points) with images.
        log.info("train-segmenter: supervision=%s, from %s", labels.supervision, args.labels)
        settings = dataclasses.replace(settings, supervision=labels.supervision)
        dataset, image_ids = open_dataset(args.data, settings)
    if context.is_main:
        segment.write_training_config(args.out, settings)
    segment.train_segmenter(dataset, image_ids, labels, args.out, settings, device,
                            show_progress=context.is_main)
    print(f"segmenter model in {Path(args.out) / 'model.pt'} (training log: "
          f"{Path(args.out) / 'training' / 'train_log.json'})")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from graphwsss.settings import load_run_settings
    from graphwsss.stages.segment import predict_folder

    settings = load_run_settings(None, args.overrides)
    result = predict_folder(args.model, args.images, args.out, settings, crf=args.crf,
                            data=args.data)
    if result.unrestricted:
        log.warning("%d images have no boxes or tags in --data and were not restricted: %s",
                    len(result.unrestricted), ", ".join(result.unrestricted[:10]))
    print(f"{len(result.written)} label PNGs in {args.out}")
    if result.failed:
        for name, reason in result.failed:
            print(f"graphwsss: skipped {name}: {reason}", file=sys.stderr)
        print(f"graphwsss: {len(result.failed)} of {len(result.failed) + len(result.written)} "
              "images could not be labelled (listed above)", file=sys.stderr)
        return 1
    return 0


def _bench_graphs(args: argparse.Namespace) -> int:
    import json

    from graphwsss.bench.graphs import bench_graphs, format_table, headline
    from graphwsss.settings import load_run_settings

    # "--builders a b key=value": argparse hands the overrides to --builders; take them back.
    builders = [name for name in args.builders if "=" not in name]
    overrides = [item for item in args.builders if "=" in item] + args.overrides
    settings = load_run_settings(args.config, overrides, supervision="box")
    result = bench_graphs(args.data, args.out, builders, settings,
                          isolate=not args.in_process, radius_loop=not args.skip_radius_loop)
    print(format_table(result))
    print(f"outputs in {args.out}: bench_graphs.csv, bench_graphs.json, one run folder per builder")
    print(json.dumps(headline(result)))
    return 0


def _settings(args: argparse.Namespace) -> int:
    from graphwsss.settings_help import describe_settings, format_settings

    rows = describe_settings(args.supervision, args.config)
    if args.json:
        import json

        print(json.dumps(rows, indent=1))
    else:
        print(format_settings(rows))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from graphwsss.settings import load_run_settings

    _check_run_folder(args.out, force=args.force)
    settings = load_run_settings(None, args.overrides, supervision="box")
    from graphwsss.stages.run import run     # after the settings: a bad one fails fast

    log.info("demo: box-supervised label propagation on the bundled sample (%s)", SAMPLE_DATA)
    # The demo shows this version: stages an earlier version made with other settings (e.g.
    # other defaults) are recomputed rather than refused, and the rest resumed.
    metrics = run(SAMPLE_DATA, args.out, settings, force=True)
    method = settings.propagator.name + (" + CRF" if settings.crf.enabled else "")
    print(f"\n{method} pseudo labels of {metrics['images']} sample images: mIoU "
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
    evaluate.add_argument("--partial", action="store_true",
                          help="score only the images of the split that have a prediction in "
                               "--pred (e.g. a run with limit=N); without it every image needs one")
    evaluate.add_argument("--limit", type=int,
                          help="score only the first N images of the split (as run's limit=N; "
                               "0: every image)")
    evaluate.set_defaults(handler=_evaluate)

    evaluate_cam = commands.add_parser(
        "evaluate-cam", help="score a run's CAMs: background-threshold sweep, mIoU, contour F",
        description="Score <run>/cams/<id>.npy against the ground truth: mIoU for each "
                    "background threshold 0.00..0.59 (--max-threshold), the best one with its "
                    "per-class IoU, and contour F at it.")
    evaluate_cam.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    evaluate_cam.add_argument("--run", required=True, help="run folder holding cams/")
    evaluate_cam.add_argument("--out", help="metrics JSON (default <run>/cam_metrics.json)")
    evaluate_cam.add_argument("--split", default="train", help="ImageSets/Segmentation list")
    evaluate_cam.add_argument("--max-threshold", type=float, default=0.59,
                              help="sweep 0.00..this in steps of 0.01 (default 0.59, docs/"
                                   "method.md §3.3; softmax CAMs may peak higher)")
    evaluate_cam.set_defaults(handler=_evaluate_cam)

    analyze = commands.add_parser(
        "analyze", help="error analysis of a run's pseudo labels: seeded/unknown, boundary band",
        description="Pixel accuracy of RUN/pseudo_labels split by RUN/seeds (seeded vs unknown) "
                    "and by a band within ceil(2% of the diagonal) px of ground-truth edges, "
                    "their crosses, per class and per image (worst pixel accuracy first); the "
                    "'unknown as background' baseline; with --against, the pixels each run alone "
                    "gets right and the per-image differences. Images without a pseudo label are "
                    "skipped and counted. Prints a table, writes JSON.")
    analyze.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    analyze.add_argument("--run", required=True,
                         help="run folder holding seeds/ and pseudo_labels/")
    analyze.add_argument("--against", metavar="RUN2",
                         help="second run folder to compare with (split by RUN's seeds)")
    analyze.add_argument("--out", help="analysis JSON (default <run>/analysis.json)")
    analyze.add_argument("--split", default="train", help="ImageSets/Segmentation list")
    analyze.set_defaults(handler=_analyze)

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
                    "crf.enabled=false device=cpu limit=10. 'graphwsss settings --supervision S' "
                    "lists every key with its type, default and meaning.")
    run.add_argument("--data", required=True,
                     help="data set in Pascal VOC layout, or COCO: an instances JSON file, or a "
                          "folder with annotations/instances_<split>.json (README, COCO input)")
    run.add_argument("--images", metavar="DIR",
                     help="COCO input: the folder its file_names are relative to (default: "
                          "images/<name>, <name> or images/ beside annotations/, <name> from "
                          "instances_<name>.json)")
    run.add_argument("--supervision", required=True, choices=["box", "scribble", "point", "image"],
                     help="kind of weak label (sets its defaults, docs/method.md §1)")
    run.add_argument("--out", required=True, help="run folder")
    run.add_argument("--config", help="YAML settings: a path, or the name of a packaged config "
                                      "such as box_voc (graphwsss/configs/*.yaml)")
    run.add_argument("--force", action="store_true",
                     help="write into an --out folder that holds other files and is not a "
                          "graphwsss run (refused without it); in a run folder whose finished "
                          "stages were made with other settings, recompute the first such stage "
                          "and every later one (refused without it)")
    run.add_argument("--stages", metavar="LIST",
                     help="rerun only these stages of an earlier run in --out, comma-separated, "
                          "from cam, seeds, affinity, propagation, refine, segment, evaluate, "
                          "report (e.g. refine,evaluate with new crf.* settings); their files "
                          "are replaced, later stages' files not named are deleted as stale, "
                          "and the earlier stages' settings must match (docs/method.md §1)")
    run.add_argument("overrides", nargs="*", metavar="key=value",
                     help="setting overrides (every key: graphwsss settings)")
    run.set_defaults(handler=_run)

    bench = commands.add_parser(
        "bench-graphs", help="compare graph builders: time, size, memory, purity, mIoU",
        description="For each graph builder: a full box-supervised run with that graph (seeds "
                    "shared between builders) for mIoU and contour F, then build time per image, "
                    "nodes, edges, peak memory and graph purity against the ground truth; and the "
                    "vectorised radius builder against a per-pixel Python loop. Writes "
                    "<out>/bench_graphs.csv|json and <out>/<builder>/ run folders; the last line "
                    "printed is one JSON object with the headline numbers.")
    bench.add_argument("--data", required=True, help="data set in Pascal VOC layout")
    bench.add_argument("--builders", nargs="+", metavar="NAME",
                       default=["backbone", "rgbxy", "superpixel", "knn", "affinity"],
                       help="graph builders, in order (default: all five)")
    bench.add_argument("--out", default="outputs/bench_graphs", help="benchmark folder")
    bench.add_argument("--config", help="YAML run settings: a path or a packaged config's name "
                                        "(graphwsss/configs/box_*.yaml)")
    bench.add_argument("--in-process", action="store_true",
                       help="measure graphs in this process (faster; memory less isolated)")
    bench.add_argument("--skip-radius-loop", action="store_true",
                       help="skip the vectorised-vs-loop radius builder timing")
    bench.add_argument("overrides", nargs="*", metavar="key=value",
                       help="setting overrides, e.g. limit=50 propagator.epochs_first=10")
    bench.set_defaults(handler=_bench_graphs)

    demo = commands.add_parser(
        "demo", help="run the main job on the bundled sample",
        description="A box-supervised run on the 12-image sample inside the package; key=value "
                    "overrides as for run (e.g. limit=2 propagator.epochs_first=1).")
    demo.add_argument("--out", default="outputs/demo", help="output folder")
    demo.add_argument("--force", action="store_true",
                      help="write into an --out folder that holds other files and is not a "
                           "graphwsss run")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="setting overrides")
    demo.set_defaults(handler=_demo)

    train_segmenter = commands.add_parser(
        "train-segmenter", help="train the segmentation network on pseudo labels (§9)",
        description="Train backbone + DeepLab-V1 head + cosine classifier on label maps: a run "
                    "folder's pseudo_labels/ (with its probabilities/ for the noise-aware loss, "
                    "segmenter.loss=nal) or any folder of <id>.png labels (cross-entropy). "
                    "Writes <out>/model.pt (for 'graphwsss predict'), <out>/training/ (resumable "
                    "checkpoint, train_log.json) and <out>/config.yaml. Images: those of the "
                    "split (and limit) with a label. Settings: --config, then key=value "
                    "(segmenter.*, backbone.*, split, device, ...); from a run folder only its "
                    "supervision is read (the class restriction of its pre-CRF arg-max).")
    train_segmenter.add_argument("--data", required=True,
                                 help="the images (data set in Pascal VOC layout; split and limit "
                                      "from the settings)")
    train_segmenter.add_argument("--labels", required=True, metavar="RUN|DIR",
                                 help="a run folder or a folder of <id>.png label maps")
    train_segmenter.add_argument("--out", required=True, help="output folder")
    train_segmenter.add_argument("--config", help="YAML settings (path or packaged name, e.g. "
                                                  "box_segmenter_gpu)")
    train_segmenter.add_argument("overrides", nargs="*", metavar="key=value",
                                 help="setting overrides, e.g. segmenter.loss=ce "
                                      "segmenter.training.epochs=2")
    train_segmenter.set_defaults(handler=_train_segmenter)

    predict = commands.add_parser(
        "predict", help="label any folder of images with a trained segmenter",
        description="Multi-scale + flip inference of a 'train-segmenter' model on every image "
                    "(.jpg .jpeg .png .bmp) of --images; writes <out>/<name>.png palette label "
                    "maps. Unreadable images are named and skipped; the exit code is then 1 "
                    "(after every other image is written).")
    predict.add_argument("--model", required=True, help="OUT/model.pt of train-segmenter")
    predict.add_argument("--images", required=True, help="folder of images")
    predict.add_argument("--out", required=True, help="output folder for <name>.png")
    predict.add_argument("--crf", action="store_true", help="DenseCRF on the probabilities "
                                                            "(crf.* settings)")
    predict.add_argument("--data", help="VOC folder whose Annotations/<name>.xml boxes (or "
                                        "seeds.tags_file tags) restrict each image's classes")
    predict.add_argument("overrides", nargs="*", metavar="key=value",
                         help="e.g. segmenter.inference_scales=[1.0] crf.iterations=5 device=cpu")
    predict.set_defaults(handler=_predict)

    settings = commands.add_parser(
        "settings", help="every setting of run: key, type, default, meaning",
        description="Print every key=value setting of 'graphwsss run' with its type, its default "
                    "for the supervision (and --config, if given), its allowed range and what it "
                    "means.")
    settings.add_argument("--supervision", default="box",
                          choices=["box", "scribble", "point", "image"],
                          help="whose defaults to show (default box)")
    settings.add_argument("--config", help="show the defaults with this YAML config applied")
    settings.add_argument("--json", action="store_true", help="one JSON list instead of text")
    settings.set_defaults(handler=_settings)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (DataError, ConfigError) as error:
        print(f"graphwsss: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # One line, no traceback: runs keep every finished image and trained network.
        resume = ("; run the same command again to resume where it stopped"
                  if args.command in ("run", "demo") else "")
        print(f"\ngraphwsss: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
