"""Tests for segloop.core.targets."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.targets import (
    BACKGROUND,
    BORDER,
    IGNORE,
    INTERIOR,
    class_ids_to_target,
    classes_to_target,
    instances_to_classes,
    normalized_distance,
)


def test_constants() -> None:
    assert (BACKGROUND, INTERIOR, BORDER, IGNORE) == (0, 1, 2, -1)


def test_single_square_border_width_1() -> None:
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[2:8, 2:8] = 5  # 6x6 square -> 20 ring pixels + 4x4 = 16 interior
    classes = instances_to_classes(labels, border_width=1)
    assert classes.dtype == np.uint8
    assert classes.shape == labels.shape
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[2:8, 2:8] = BORDER
    expected[3:7, 3:7] = INTERIOR
    np.testing.assert_array_equal(classes, expected)
    assert (classes == BORDER).sum() == 20
    assert (classes == INTERIOR).sum() == 16


def test_border_width_2_is_chessboard() -> None:
    labels = np.zeros((12, 12), dtype=np.uint16)
    labels[2:10, 2:10] = 1  # 8x8 square, interior is the central 4x4
    classes = instances_to_classes(labels, border_width=2)
    expected = np.zeros((12, 12), dtype=np.uint8)
    expected[2:10, 2:10] = BORDER
    expected[4:8, 4:8] = INTERIOR
    np.testing.assert_array_equal(classes, expected)
    # (4, 4) is at chessboard distance 3 from the background pixel (1, 1): interior.
    # (3, 3) is at chessboard distance 2 (city-block 4) from (1, 1): border.
    assert classes[4, 4] == INTERIOR
    assert classes[3, 3] == BORDER


def test_touching_objects_are_separated_by_border_band() -> None:
    labels = np.zeros((9, 12), dtype=np.int64)
    labels[1:8, 1:6] = 1  # columns 1..5
    labels[1:8, 6:11] = 2  # columns 6..10, touching object 1
    classes = instances_to_classes(labels, border_width=1)
    # Interface columns 5 (object 1) and 6 (object 2) are border on every object row.
    assert np.all(classes[1:8, 5] == BORDER)
    assert np.all(classes[1:8, 6] == BORDER)
    # Interiors: rows 2..6, columns 2..4 and 7..9.
    assert np.all(classes[2:7, 2:5] == INTERIOR)
    assert np.all(classes[2:7, 7:10] == INTERIOR)
    assert (classes == INTERIOR).sum() == 2 * 5 * 3
    # Merging the two labels removes the interface border.
    merged = instances_to_classes((labels > 0).astype(np.uint8), border_width=1)
    assert merged[4, 5] == INTERIOR and merged[4, 6] == INTERIOR


def test_small_object_is_all_border() -> None:
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[3:5, 3:5] = 7  # 2x2: no pixel is 2 pixels away from the background
    classes = instances_to_classes(labels, border_width=1)
    assert np.all(classes[3:5, 3:5] == BORDER)
    assert (classes == INTERIOR).sum() == 0
    assert (classes == BORDER).sum() == 4


def test_image_edge_is_not_a_border() -> None:
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[0:4, 0:4] = 1  # touches the top and left image edges
    classes = instances_to_classes(labels, border_width=1)
    expected = np.zeros((6, 6), dtype=np.uint8)
    expected[0:4, 0:4] = BORDER
    expected[0:3, 0:3] = INTERIOR
    np.testing.assert_array_equal(classes, expected)


def test_border_width_zero_and_empty() -> None:
    labels = np.zeros((5, 5), dtype=np.int32)
    labels[1:3, 1:3] = 1
    classes = instances_to_classes(labels, border_width=0)
    assert (classes == INTERIOR).sum() == 4 and (classes == BORDER).sum() == 0
    empty = instances_to_classes(np.zeros((4, 4), dtype=np.int32))
    assert np.all(empty == BACKGROUND)


def test_instances_to_classes_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="border_width"):
        instances_to_classes(np.zeros((3, 3), dtype=np.int32), border_width=-1)
    with pytest.raises(ValueError, match="integer"):
        instances_to_classes(np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        instances_to_classes(-np.ones((3, 3), dtype=np.int32))


def test_classes_to_target() -> None:
    classes = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    target = classes_to_target(classes)
    assert target.dtype == np.int64
    np.testing.assert_array_equal(target, [[0, 1], [2, 1]])
    ignore = np.array([[False, True], [False, False]])
    target = classes_to_target(classes, ignore)
    np.testing.assert_array_equal(target, [[0, -1], [2, 1]])
    # The input is not modified.
    np.testing.assert_array_equal(classes, [[0, 1], [2, 1]])
    with pytest.raises(ValueError, match="shape"):
        classes_to_target(classes, np.zeros((3, 3), dtype=bool))


def test_class_ids_to_target() -> None:
    class_ids = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.uint8)
    target = class_ids_to_target(class_ids)
    assert target.dtype == np.int64
    np.testing.assert_array_equal(target, [[-1, 0, 1], [2, -1, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        class_ids_to_target(np.array([-1, 1]))


def test_normalized_distance_peaks_at_centres_and_dips_at_contacts() -> None:
    labels = np.zeros((12, 22), np.int32)
    labels[2:10, 2:10] = 1
    labels[2:10, 10:18] = 2  # touching the first square along a whole side
    labels[0:3, 19:22] = 3  # cut by the image edge
    distance = normalized_distance(labels)
    assert distance.dtype == np.float32
    assert distance[labels == 0].max() == 0.0
    for index in (1, 2, 3):
        assert distance[labels == index].max() == pytest.approx(1.0)
        assert distance[labels == index].min() > 0.0
    row = distance[5]
    # a valley at the contact: the pixels either side of it are edge pixels
    assert row[9] == row[10] == pytest.approx(0.25)
    assert row[5] == row[6] == pytest.approx(1.0)
    # the image edge counts as outside: the cut object's edge pixels are low too
    assert distance[0, 20] < 1.0


def test_normalized_distance_is_scale_free() -> None:
    small = np.zeros((20, 20), np.int32)
    small[5:11, 5:11] = 1
    large = np.kron(small, np.ones((3, 3), np.int32))
    assert normalized_distance(small).max() == normalized_distance(large).max() == 1.0
    # the middle of the large square is as central as the middle of the small one
    assert normalized_distance(large)[24, 24] == pytest.approx(1.0)
