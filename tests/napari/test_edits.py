"""Digests that tell a model's unedited output from the user's corrections."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.napari import edits

from .conftest import THREE_DISKS, disks


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.int64, np.uint64]
)
def test_the_digest_depends_on_the_values_not_the_dtype(dtype):
    labels = disks(THREE_DISKS)  # int32, what segloop writes
    assert edits.digest(labels.astype(dtype)) == edits.digest(labels)


def test_the_digest_sees_one_changed_pixel_and_the_shape():
    labels = disks(THREE_DISKS)
    edited = labels.copy()
    edited[0, 0] = 7
    assert edits.digest(edited) != edits.digest(labels)
    huge = labels.astype(np.int64)
    huge[0, 0] = 2**40  # does not fit int32: hashed as int64, still different
    assert edits.digest(huge) != edits.digest(labels)
    assert edits.digest(labels.reshape(48, 192)) != edits.digest(labels)
    assert edits.digest(labels[:, ::2]) == edits.digest(np.ascontiguousarray(labels[:, ::2]))


def test_a_mask_and_its_labels_agree_and_negative_values_count():
    mask = disks(THREE_DISKS) > 0
    assert edits.digest(mask) == edits.digest(mask.astype(np.int32))
    negative = disks(THREE_DISKS) * -1
    assert edits.digest(negative.astype(np.int8)) == edits.digest(negative)
    assert edits.digest(negative) != edits.digest(-negative)
