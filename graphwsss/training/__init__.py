"""Network training shared by the affinity CNN and the CAM network: augmentation and the loop."""

from graphwsss.training.augment import Augmented, augment, color_jitter, random_crop, random_scale
from graphwsss.training.dataset import AugmentedImageSet
from graphwsss.training.loop import load_trained_weights, parameter_groups, train_network

__all__ = ["Augmented", "AugmentedImageSet", "augment", "color_jitter", "random_crop",
           "random_scale", "load_trained_weights", "parameter_groups", "train_network"]
