"""Post-processing (docs/method.md §7): upsampling, DenseCRF, box constraint, GrabCut from the
pseudo label, instance masks."""

from graphwsss.postprocess.crf import clear_outside_boxes, dense_crf
from graphwsss.postprocess.grabcut import grabcut_from_label
from graphwsss.postprocess.instances import (instances_from_boxes, instances_to_coco,
                                             write_instance_png)
from graphwsss.postprocess.tightness import meets_box, tight_box_background, tight_box_mask
from graphwsss.postprocess.upsample import upsample_probs

__all__ = ["clear_outside_boxes", "dense_crf", "grabcut_from_label", "instances_from_boxes",
           "instances_to_coco", "meets_box", "tight_box_background", "tight_box_mask",
           "upsample_probs", "write_instance_png"]
