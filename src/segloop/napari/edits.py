"""Which frames of a Labels layer hold the user's edits, and which a model's raw output.

When the Segment widget writes a Labels layer it records a digest of every frame it
wrote in ``layer.metadata[WRITTEN_KEY]`` (computed in the worker thread). A frame whose
data still has that digest is a model's unedited output; any other frame (painted,
erased, filled, or never written by segloop) is the user's work. Two rules use this:

- re-segmenting never overwrites a layer with user edits in the frames it would
  replace: the new result goes to a new layer (:func:`has_user_edits`);
- saving a frame that is a model's unedited output never replaces a saved correction
  (``finetune_adapters.Correction.resolved_origin``, the project's ``origin="model"``).
  A frame Count computed from labels the user painted is written output too (a re-run
  may replace it), but it is saved as the user's (:data:`FROM_USER_KEY`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Labels

#: ``layer.metadata`` key: {frame index (-1 for a 2-D layer): digest of what Segment wrote}
WRITTEN_KEY = "segloop_written"
WHOLE = -1
#: ``layer.metadata`` key: the written frames (as in :data:`WRITTEN_KEY`) that were
#: computed from the user's own labels, not by a model
FROM_USER_KEY = "segloop_from_user"


def digest(frame: np.ndarray) -> str:
    """Content digest of one frame (shape, dtype-independent values)."""
    array = _canonical(frame)
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(str(array.shape).encode())
    hasher.update(memoryview(array).cast("B"))
    return hasher.hexdigest()


def _canonical(frame: np.ndarray) -> np.ndarray:
    """``frame`` as contiguous int32 when its integer values fit (no copy for int32
    labels, which is what segloop writes), int64 otherwise: equal values give equal bytes
    whatever the dtype, and the usual case hashes in place (half the time of a copy)."""
    kind, size = frame.dtype.kind, frame.dtype.itemsize
    if kind not in "iub":
        return np.ascontiguousarray(frame)
    if size < 4 or (kind == "i" and size == 4):
        return np.ascontiguousarray(frame, dtype=np.int32)  # lossless
    info = np.iinfo(np.int32)
    fits = frame.size == 0 or (info.min <= frame.min() and frame.max() <= info.max)
    return np.ascontiguousarray(frame, dtype=np.int32 if fits else np.int64)


def frame_digests(labels: np.ndarray, frame: int | None = None) -> dict[int, str]:
    """Digests of what a segment run writes: one frame of a stack, each frame of a
    stack (``labels`` 3-D, ``frame`` None), or a 2-D image (key :data:`WHOLE`)."""
    if frame is not None:
        return {int(frame): digest(labels)}
    if labels.ndim == 3:
        return {t: digest(labels[t]) for t in range(labels.shape[0])}
    return {WHOLE: digest(labels)}


def frame_states(labels: np.ndarray) -> dict[int, tuple[str, bool]]:
    """``{frame key: (digest, empty)}`` of every frame of ``labels`` (a worker's copy):
    what :func:`user_frames` compares, later, with the layer's records."""
    digests = frame_digests(labels)
    if labels.ndim == 3:
        return {t: (digests[t], not labels[t].any()) for t in digests}
    return {WHOLE: (digests[WHOLE], not labels.any())}


def user_frames(
    states: dict[int, tuple[str, bool]], written: dict[int, str], from_user: Iterable[int]
) -> list[int]:
    """Keys of the frames in ``states`` (:func:`frame_states` of a copy of a layer's
    data) that hold the user's work: edited since segloop wrote them (the rule of
    :func:`data_has_edits`), or listed in the layer's ``from_user`` record. Compared in
    the GUI thread with the layer's records as they are then: a Segment run that wrote a
    frame after the copy was taken has recorded it by the time this runs."""
    owned = {int(key) for key in from_user}
    return [
        key
        for key, (content, empty) in states.items()
        if key in owned or (not (empty and key not in written) and written.get(key) != content)
    ]


def record_written(
    layer: Labels, digests: dict[int, str], replace: bool, from_user: Iterable[int] = ()
) -> None:
    """Store the digests of the frames Segment (or Count) just wrote into ``layer``.

    ``from_user``: those of the frames that were computed from the user's own labels
    (Count's instances of a mask the user painted). A re-run may replace them while they
    are unedited, as any written frame, but saved as corrections they are the user's
    work (:data:`FROM_USER_KEY`).
    """
    known = {} if replace else dict(layer.metadata.get(WRITTEN_KEY) or {})
    layer.metadata[WRITTEN_KEY] = {**known, **digests}
    kept = set() if replace else set(layer.metadata.get(FROM_USER_KEY) or ()) - set(digests)
    layer.metadata[FROM_USER_KEY] = sorted(kept | {int(frame) for frame in from_user})


def has_user_edits(layer: Labels, frames: Iterable[int] | None = None) -> bool:
    """True when any of ``frames`` (None: every frame) is not a model's unedited output.

    An empty frame that segloop never wrote counts as unedited (nothing of the user's is
    there); one that Segment wrote with objects and the user then emptied (every object
    erased: "nothing here") is an edit.
    """
    written = layer.metadata.get(WRITTEN_KEY) or {}
    return data_has_edits(np.asarray(layer.data), written, frames)


def data_has_edits(
    data: np.ndarray, written: dict[int, str], frames: Iterable[int | None] | None = None
) -> bool:
    """:func:`has_user_edits` of a layer's ``data`` and its recorded ``written`` digests
    (safe in a worker thread: no layer is touched)."""
    if frames is None:
        frames = range(data.shape[0]) if data.ndim == 3 else [None]
    for frame in frames:
        whole = frame is None or frame == WHOLE or data.ndim == 2
        part = data if whole else data[frame]
        key = WHOLE if frame is None or data.ndim == 2 else int(frame)
        if not part.any() and key not in written:
            continue
        expected = written.get(key)
        if expected is None or digest(part) != expected:
            return True
    return False


class EditCheck:
    """:func:`has_user_edits` of one Labels layer, computed in a worker thread.

    Made in the GUI thread (it keeps a reference to the layer's data and a copy of its
    recorded digests, and listens to the layer's ``paint`` and ``data`` events); a worker
    calls :meth:`compute`; back in the GUI thread :meth:`answer` gives the result only if
    the layer was neither painted, undone, redone nor given new data since, else None
    (then the caller checks again, in the GUI thread). Digesting every frame of a long
    stack takes seconds, which the GUI thread must not spend; an edit made meanwhile is
    never missed.
    """

    def __init__(self, layer: Labels) -> None:
        self.layer = layer
        self.data = layer.data
        self.written = dict(layer.metadata.get(WRITTEN_KEY) or {})
        self.history = history_state(layer)
        self.touched = False
        self.result: dict[tuple, bool] = {}
        layer.events.paint.connect(self._touch)
        layer.events.data.connect(self._touch)

    def _touch(self, *_args) -> None:
        self.touched = True

    def compute(self, shape: tuple[int, ...], frame: int | None) -> None:
        """(Worker thread) Whether writing a result of ``shape`` (one ``frame`` of it, or
        all of it) would replace edits; a layer of another shape is checked whole."""
        data = np.asarray(self.data)
        frames = [frame] if frame is not None and tuple(data.shape) == tuple(shape) else None
        self.result[(tuple(shape), frame)] = data_has_edits(data, self.written, frames)

    def answer(self, shape: tuple[int, ...], frame: int | None) -> bool | None:
        """(GUI thread) The computed result, or None when it may be out of date."""
        if self.touched or self.layer.data is not self.data:
            return None
        if history_state(self.layer) != self.history:  # undo / redo: no event is sent
            return None
        if _stroke_in_progress(self.layer):  # a drag not yet released: no event yet
            return None
        if (self.layer.metadata.get(WRITTEN_KEY) or {}) != self.written:
            return None
        return self.result.get((tuple(shape), frame))

    def close(self) -> None:
        """Stop listening to the layer."""
        for emitter in (self.layer.events.paint, self.layer.events.data):
            emitter.disconnect(self._touch)


def history_state(layer: Labels) -> tuple:
    """The layer's undo and redo lists: their lengths and the identity of their last
    items. napari's undo and redo write the data in place without a ``paint`` or
    ``data`` event, but move an item between these lists (as a new list object, so an
    undo followed by a redo changes the state too)."""
    state = []
    for name in ("_undo_history", "_redo_history"):
        items = getattr(layer, name, None) or ()
        state += [len(items), id(items[-1]) if items else None]
    return tuple(state)


def _stroke_in_progress(layer: Labels) -> bool:
    """A brush or eraser drag is being painted (napari writes each move into the data and
    sends its ``paint`` event only when the mouse is released)."""
    return bool(getattr(layer, "_block_history", False) or getattr(layer, "_staged_history", ()))


def edit_checks(viewer, name: str) -> list[EditCheck]:
    """An :class:`EditCheck` for every Labels layer a result named ``name`` may go to
    (``name``, ``name [1]``, ...: see :func:`~segloop.napari._common.writable_labels_name`)."""
    from napari.layers import Labels

    checks, candidate, index = [], name, 0
    names = {layer.name: layer for layer in viewer.layers}
    while isinstance(names.get(candidate), Labels):
        checks.append(EditCheck(names[candidate]))
        index += 1
        candidate = f"{name} [{index}]"
    return checks
