"""Tests for segloop.core.scale."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import disk

from segloop.core.scale import (
    estimate_diameter,
    rescale_image,
    rescale_labels,
    resize_to_shape,
    scale_factor,
)


def _disks(shape=(61, 83)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    for i, centre in enumerate([(15, 15), (40, 50), (20, 65)], start=1):
        labels[disk(centre, 10, shape=shape)] = i
    return labels


def test_estimate_diameter() -> None:
    labels = np.zeros((50, 50), dtype=np.int32)
    labels[disk((25, 25), 10)] = 7
    assert estimate_diameter(labels) == pytest.approx(20, abs=1)
    assert estimate_diameter(_disks()) == pytest.approx(20, abs=1)
    stack = np.stack([labels, np.zeros_like(labels), labels])  # ids repeat across frames
    assert estimate_diameter(stack) == pytest.approx(20, abs=1)
    assert math.isnan(estimate_diameter(np.zeros((10, 10), dtype=np.int32)))
    huge = np.where(labels > 0, 2**31 - 1, 0).astype(np.int64)  # sparse large ids
    assert estimate_diameter(huge) == pytest.approx(20, abs=1)


def test_scale_factor() -> None:
    assert scale_factor(20.0, 30.0) == pytest.approx(1.5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            scale_factor(bad, 30.0)
    with pytest.raises(ValueError):
        scale_factor(20.0, 0.0)


def test_factor_one_is_identity() -> None:
    image = np.random.default_rng(0).random((11, 13)).astype(np.float32)
    labels = _disks()
    assert rescale_image(image, 1.0) is image
    assert rescale_labels(labels, 1) is labels
    assert resize_to_shape(labels, labels.shape, order=0) is labels


def test_rescale_round_trip() -> None:
    labels = _disks()
    up = rescale_labels(labels, 2.0)
    assert up.shape == (122, 166) and up.dtype == labels.dtype
    assert set(np.unique(up)) == set(np.unique(labels))
    back = resize_to_shape(up, labels.shape, order=0)
    assert back.shape == labels.shape and back.dtype == labels.dtype
    for i in (1, 2, 3):
        a, b = labels == i, back == i
        assert (a & b).sum() / (a | b).sum() > 0.9
    down = rescale_labels(labels, 0.37)
    assert down.shape == (round(61 * 0.37), round(83 * 0.37))


def test_rescale_image_and_probabilities() -> None:
    image = _disks().astype(np.float32) / 3
    up = rescale_image(image, 2.0)
    assert up.shape == (122, 166) and up.dtype == np.float32
    assert up.min() >= 0 and up.max() <= 1.0 + 1e-6  # preserve_range, linear
    down = rescale_image(image, 0.5)
    assert down.shape == (30, 42)  # round(30.5) == 30 (banker's), round(41.5) == 42
    u8 = (image * 255).astype(np.uint8)
    assert rescale_image(u8, 1.5).dtype == np.float32
    probs = np.stack([1 - image, image, np.zeros_like(image)])
    probs_up = rescale_image(probs, 1.5)
    assert probs_up.shape == (3, 92, 124)
    back = resize_to_shape(probs_up, image.shape, order=1)
    assert back.shape == probs.shape
    np.testing.assert_allclose(back.sum(axis=0), 1.0, atol=1e-5)  # linear keeps sums
    assert np.abs(back - probs).mean() < 0.05
    with pytest.raises(ValueError):
        rescale_image(image, 0.0)


def test_area_weighted_diameter_ignores_small_fragments():
    labels = np.zeros((200, 200), np.int32)
    labels[disk((100, 100), 40)] = 1  # one 80 px object
    for index in range(6):  # and six 4 px fragments, as on an over-split large cell
        labels[10 + 30 * index : 13 + 30 * index, 5:8] = index + 2
    assert estimate_diameter(labels) < 10  # plain median: a fragment
    assert estimate_diameter(labels, area_weighted=True) == pytest.approx(80, rel=0.05)


def test_diameter_range_is_the_trained_spread_in_network_pixels():
    from segloop.core.evaluation import LabelledImage
    from segloop.core.samples import diameter_range

    from ..conftest import disks_image

    data = []
    for radius in (4, 6, 8, 10, 12, 14, 16, 18, 20, 22):
        image, labels = disks_image([(60, 60), (60, 180)], [radius] * 2, shape=(240, 240))
        data.append(LabelledImage(image, labels, str(radius)))
    low, high = diameter_range(data, [1.0] * len(data))
    assert 8 <= low <= 14 and 38 <= high <= 44  # 10th-90th percentile of 8..44 px
    # rescaled training: every image brought to 24 px -> a narrow range around 24
    scales = [24.0 / (2 * r) for r in (4, 6, 8, 10, 12, 14, 16, 18, 20, 22)]
    low, high = diameter_range(data, scales)
    assert 22 <= low <= high <= 26
    # a zoom augmentation widens it by the square root of its factors
    wide = diameter_range(data, scales, (0.25, 4.0))
    assert wide[0] == pytest.approx(low * 0.5, abs=0.02) and wide[1] == pytest.approx(
        high * 2, abs=0.02
    )
    assert diameter_range([LabelledImage(image, labels * 0, "empty")], [1.0]) is None
