"""``report.html``: the metrics table and, per image, image / seeds / pseudo label / ground truth."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from graphwsss.data.palette import colorize, read_label_png
from graphwsss.data.voc import VOCDataset
from graphwsss.stages.evaluate import format_table
from graphwsss.utils.io import atomic_write

THUMBNAIL_WIDTH = 240


def _png_data_uri(rgb: np.ndarray) -> str:
    image = Image.fromarray(rgb)
    if image.width > THUMBNAIL_WIDTH:
        height = round(image.height * THUMBNAIL_WIDTH / image.width)
        image = image.resize((THUMBNAIL_WIDTH, height), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_report(out_dir: str | os.PathLike, dataset: VOCDataset, image_ids: list[str],
                 metrics: dict | None, title: str) -> Path:
    """Write ``<out_dir>/report.html`` for the first ``image_ids`` (thumbnails inline)."""
    out_dir = Path(out_dir)
    columns = ["image", "seeds", "pseudo label", "ground truth"]
    rows = []
    for image_id in image_ids:
        sample = dataset.load(image_id)
        cells = [sample.image]
        for folder in ("seeds", "pseudo_labels"):
            path = out_dir / folder / f"{image_id}.png"
            cells.append(colorize(read_label_png(path)) if path.is_file() else None)
        cells.append(colorize(sample.label) if sample.label is not None else None)
        images = "".join(f"<td><img src='{_png_data_uri(cell)}'></td>" if cell is not None
                         else "<td>—</td>" for cell in cells)
        rows.append(f"<tr><th>{html.escape(image_id)}</th>{images}</tr>")
    table = (f"<pre>{html.escape(format_table(metrics))}</pre>" if metrics
             else "<p>No ground truth: no metrics.</p>")
    summary = ""
    if metrics:
        keys = ("miou", "contour_f", "seed_precision", "seed_coverage", "single_class_labels",
                "seeds_single_class", "images", "seconds")
        summary = "<ul>" + "".join(
            f"<li>{key}: {metrics[key]:.2f}</li>" if isinstance(metrics.get(key), float)
            else f"<li>{key}: {metrics.get(key)}</li>" for key in keys if key in metrics) + "</ul>"
    header = "".join(f"<th>{name}</th>" for name in ["id", *columns])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px;vertical-align:top}}
img{{image-rendering:pixelated}}</style></head>
<body><h1>{html.escape(title)}</h1>{summary}{table}
<table><tr>{header}</tr>{''.join(rows)}</table></body></html>
"""
    return atomic_write(out_dir / "report.html", page)
