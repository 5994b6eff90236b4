"""Post-processing (docs/method.md §7): upsampling, DenseCRF, box constraint, instance masks."""

from graphwsss.postprocess.crf import clear_outside_boxes, dense_crf
from graphwsss.postprocess.instances import (instances_from_boxes, instances_to_coco,
                                             write_instance_png)
from graphwsss.postprocess.tightness import tight_box_background, tight_box_mask
from graphwsss.postprocess.upsample import upsample_probs

__all__ = ["clear_outside_boxes", "dense_crf", "tight_box_background", "tight_box_mask", "instances_from_boxes", "instances_to_coco",
           "upsample_probs", "write_instance_png"]
