import numpy as np
import pytest

from graphwsss.training import augment, color_jitter, random_crop


def _image(height=40, width=60):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_augment_is_reproducible_and_keeps_image_and_label_aligned():
    image = _image()
    label = np.zeros((40, 60), np.uint8)
    label[:, 30:] = 1
    image[:, 30:] = 255                      # the label-1 half is white
    first = augment(image, label, np.random.default_rng(3), crop_size=32, jitter=0.0)
    second = augment(image, label, np.random.default_rng(3), crop_size=32, jitter=0.0)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.label, second.label)
    assert first.image.shape == (32, 32, 3) and first.label.shape == (32, 32)
    white = (first.image == 255).all(axis=2)
    ones = first.label == 1
    # Nearest vs bilinear resizing may disagree on the one-pixel border between the halves.
    assert (white == ones).mean() > 0.9


def test_crop_pads_small_images_with_unknown_labels():
    image = _image(10, 12)
    label = np.ones((10, 12), np.uint8)
    out = random_crop(image, label, 16, np.random.default_rng(0))
    assert out.valid.sum() == 10 * 12
    assert (out.label[~out.valid] == 255).all() and (out.label[out.valid] == 1).all()
    assert (out.image[~out.valid] == 0).all()


def test_augment_without_label():
    out = augment(_image(), None, np.random.default_rng(0), crop_size=24)
    assert out.label is None and out.image.shape == (24, 24, 3)


def test_color_jitter_changes_colours_within_range():
    image = _image()
    jittered = color_jitter(image, 0.5, np.random.default_rng(1))
    assert jittered.dtype == np.uint8 and jittered.shape == image.shape
    assert not np.array_equal(jittered, image)
    assert np.array_equal(color_jitter(image, 0.0, np.random.default_rng(1)), image)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="uint8"):
        augment(_image().astype(np.float32), None, np.random.default_rng(0), crop_size=8)
    with pytest.raises(ValueError, match="does not match"):
        augment(_image(), np.zeros((5, 5), np.uint8), np.random.default_rng(0), crop_size=8)
    with pytest.raises(ValueError, match="scale_range"):
        augment(_image(), None, np.random.default_rng(0), crop_size=8, scale_range=(2.0, 1.0))
