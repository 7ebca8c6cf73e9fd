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


def test_a_frame_the_user_emptied_is_an_edit_and_an_unwritten_empty_one_is_not():
    from napari.layers import Labels

    output = disks(THREE_DISKS)
    stack = np.stack([output, output, np.zeros_like(output)])
    layer = Labels(stack.copy())
    edits.record_written(layer, edits.frame_digests(stack[:2]), replace=True)
    assert not edits.has_user_edits(layer)  # frames 0-1 as written, frame 2 never written
    layer.data[1] = 0  # every object of frame 1 erased: "nothing here"
    assert edits.has_user_edits(layer, [1])
    assert not edits.has_user_edits(layer, [0, 2])
    found_nothing = Labels(np.zeros_like(output))
    edits.record_written(found_nothing, edits.frame_digests(found_nothing.data), replace=True)
    assert not edits.has_user_edits(found_nothing)  # the model's own empty output
    emptied = Labels(output.copy())
    edits.record_written(emptied, edits.frame_digests(output), replace=True)
    emptied.data[:] = 0
    assert edits.has_user_edits(emptied)


def test_an_edit_check_from_a_worker_is_dropped_when_the_layer_is_painted(make_napari_viewer):
    """What a whole-stack re-run or a Count run relies on: the digests of every frame are
    compared in the worker, and a stroke painted meanwhile makes the GUI thread check
    again, so the stroke is never overwritten."""
    from segloop.napari._common import writable_labels_name

    viewer = make_napari_viewer()
    output = disks(THREE_DISKS)
    stack = np.stack([output, output])
    layer = viewer.add_labels(stack.copy(), name="m instances")
    edits.record_written(layer, edits.frame_digests(stack), replace=True)
    checks = edits.edit_checks(viewer, "m instances")
    assert [check.layer for check in checks] == [layer]
    checks[0].compute(stack.shape, None)  # what the worker does
    assert checks[0].answer(stack.shape, None) is False
    assert writable_labels_name(viewer, "m instances", stack.shape, None, checks) == "m instances"
    layer.paint((1, 2, 2), 9)  # the user paints while the job runs
    assert checks[0].answer(stack.shape, None) is None
    name = writable_labels_name(viewer, "m instances", stack.shape, None, checks)
    assert name == "m instances [1]"
    # nor after an undo, or an undo and a redo (napari writes them in place, with no
    # paint or data event), nor during a brush drag not yet released
    undone = edits.EditCheck(layer)
    undone.compute(stack.shape, None)
    layer.undo()
    assert undone.answer(stack.shape, None) is None
    both = edits.EditCheck(layer)
    layer.redo()
    layer.undo()
    both.compute(stack.shape, None)
    layer.redo()
    assert both.answer(stack.shape, None) is None
    dragging = edits.EditCheck(layer)
    dragging.compute(stack.shape, None)
    layer._begin_stroke()  # what napari's paint tool does on mouse press
    layer.data[0, 5, 5] = 4
    assert dragging.answer(stack.shape, None) is None
    layer._commit_stroke()
    for check in (undone, both, dragging):
        check.close()
    # a check of a stale layer (new data set) is not trusted either
    fresh = edits.EditCheck(layer)
    fresh.compute(stack.shape, 0)
    layer.data = stack.copy()
    assert fresh.answer(stack.shape, 0) is None
    for check in [*checks, fresh]:
        check.close()


def test_a_frame_is_never_written_while_a_worker_copies_the_stack(make_napari_viewer):
    """A worker copying a big layer (own_copy) and the GUI thread writing a Segment frame
    into that layer in place take turns, so the copy never holds half a frame."""
    import threading
    import time

    from segloop.napari import adapters
    from segloop.napari.layer_updates import STACK_WRITE_LOCK

    big = np.zeros((3, 1024, 1024 * 3), np.int32)  # over CHECK_NOW_VALUES: copied in a worker
    assert big.size > adapters.CHECK_NOW_VALUES
    copied: list[np.ndarray] = []
    with STACK_WRITE_LOCK:  # a frame write in progress
        worker = threading.Thread(target=lambda: copied.append(adapters.own_copy(big)))
        worker.start()
        time.sleep(0.3)
        assert not copied  # the copy waits for the write
        big[1] = 5
    worker.join(10)
    assert copied and (copied[0][1] == 5).all()

    viewer = make_napari_viewer()
    viewer.add_labels(big, name="cells")
    released = threading.Event()

    def copy_slowly() -> None:  # a worker in the middle of its copy
        with STACK_WRITE_LOCK:
            released.wait(0.4)

    holder = threading.Thread(target=copy_slowly)
    holder.start()
    time.sleep(0.05)
    start = time.monotonic()
    frame = np.full(big.shape[1:], 7, np.int32)
    stack = adapters.frame_into(viewer, "cells", "labels", frame, 2, big.shape)
    waited = time.monotonic() - start
    holder.join(10)
    assert stack is big and (big[2] == 7).all()  # written in place, once the copy was done
    assert waited > 0.2


def test_frames_computed_from_the_users_labels_are_kept_until_rewritten():
    from napari.layers import Labels

    layer = Labels(np.zeros((3, 8, 8), np.int32))
    edits.record_written(layer, {0: "a", 1: "b"}, replace=True, from_user=[1])
    assert layer.metadata[edits.FROM_USER_KEY] == [1]
    edits.record_written(layer, {2: "c"}, replace=False, from_user=[2])  # another frame
    assert layer.metadata[edits.FROM_USER_KEY] == [1, 2]
    edits.record_written(layer, {1: "d"}, replace=False)  # Segment rewrote frame 1
    assert layer.metadata[edits.FROM_USER_KEY] == [2]
    edits.record_written(layer, {0: "e"}, replace=True)  # a whole new result
    assert layer.metadata[edits.FROM_USER_KEY] == []


def test_user_frames_follow_the_records_as_they_are_when_compared():
    stack = np.zeros((4, 8, 8), np.int32)
    stack[0, 1:3, 1:3] = 1  # written by Segment, unedited
    stack[1, 1:3, 1:3] = 2  # painted by the user (never written)
    stack[3, 1:3, 1:3] = 1  # written, then Count of the user's labels
    states = edits.frame_states(stack)  # frame 2: blank, never written
    written = edits.frame_digests(stack[[0]]) | {3: edits.digest(stack[3])}
    assert edits.user_frames(states, written, from_user=[3]) == [1, 3]
    # the copy was taken after Segment wrote frame 1 but before it recorded the digest:
    # compared with the records of later, frame 1 is a model's output
    written[1] = edits.digest(stack[1])
    assert edits.user_frames(states, written, from_user=[3]) == [3]
    # a frame segloop wrote and the user then emptied is the user's work
    written[2] = edits.digest(np.ones((8, 8), np.int32))
    assert edits.user_frames(states, written, from_user=[]) == [2]
    flat = edits.frame_states(stack[1])
    assert list(flat) == [edits.WHOLE] and edits.user_frames(flat, {}, []) == [edits.WHOLE]
