"""Data layer: typed records, the Pascal VOC and COCO readers, label PNG I/O."""

from graphwsss.data.coco import COCODataset, decode_segmentation, encode_rle
from graphwsss.data.errors import DataError
from graphwsss.data.palette import colorize, read_image, read_label_png, voc_palette, write_label_png
from graphwsss.data.records import BACKGROUND, IGNORE_INDEX, Box, Point, Sample, tags_from_boxes
from graphwsss.data.voc import VOCDataset, read_class_names

__all__ = [
    "BACKGROUND", "IGNORE_INDEX", "Box", "COCODataset", "DataError", "Point", "Sample",
    "VOCDataset", "colorize", "decode_segmentation", "encode_rle", "read_class_names",
    "read_image", "read_label_png", "tags_from_boxes", "voc_palette", "write_label_png",
]
