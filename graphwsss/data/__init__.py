"""Data layer: typed records, the Pascal VOC and COCO readers, label PNG I/O."""

# Loaded on first use (PEP 562): ``from graphwsss.data.errors import DataError`` must not
# import cv2, torch or pycocotools, so that ``graphwsss --help`` stays fast.
from graphwsss.utils.lazy import lazy_exports

_EXPORTS = {
    "COCODataset": "coco", "decode_segmentation": "coco", "encode_rle": "coco",
    "DataError": "errors",
    "colorize": "palette", "read_image": "palette", "read_label_png": "palette",
    "voc_palette": "palette", "write_label_png": "palette",
    "BACKGROUND": "records", "IGNORE_INDEX": "records", "Box": "records", "Point": "records",
    "Sample": "records", "tags_from_boxes": "records",
    "VOCDataset": "voc", "read_class_names": "voc",
}


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "BACKGROUND", "IGNORE_INDEX", "Box", "COCODataset", "DataError", "Point", "Sample",
    "VOCDataset", "colorize", "decode_segmentation", "encode_rle", "read_class_names",
    "read_image", "read_label_png", "tags_from_boxes", "voc_palette", "write_label_png",
]
