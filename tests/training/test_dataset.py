"""AugmentedImageSet: the per-epoch, per-image augmentation shared by the training sets."""

import torch

from graphwsss.data import VOCDataset
from graphwsss.settings import TrainingSettings
from graphwsss.training import AugmentedImageSet


def test_items_repeat_within_an_epoch_and_change_across_epochs(sample_root):
    dataset = VOCDataset(sample_root)
    training = TrainingSettings(crop_size=64)
    images = AugmentedImageSet(dataset, dataset.ids[:2], training, seed=3,
                               pixel_mean=(0.5, 0.5, 0.5), pixel_std=(0.2, 0.2, 0.2), stride=8)
    image_id = dataset.ids[0]
    image = dataset.load(image_id).image
    assert len(images) == 2 and images.grid == (8, 8)
    _, first = images.augment_image(image_id, image, None)
    _, again = images.augment_image(image_id, image, None)
    assert first["image"].shape == (3, 64, 64) and first["image_grid"].shape == (3, 8, 8)
    assert first["valid"].shape == (8, 8) and first["valid"].dtype == torch.bool
    assert torch.equal(first["image"], again["image"])
    images.set_epoch(1)
    _, later = images.augment_image(image_id, image, None)
    assert not torch.equal(first["image"], later["image"])
