"""Writing result layers into a napari viewer: find a layer, update it in place or add it
(without selecting it, with its painting overlays built when a paint tool needs them), and
put one frame into a stack; and the copies of layer data that workers take
(:func:`snapshot`, :func:`own_copy`), which never hold half a written frame. Widgets reach
these through :mod:`segloop.napari.adapters`, which re-exports them.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from segloop.napari.layer_controls import appending_without_controls, build_controls

if TYPE_CHECKING:
    from napari.layers import Layer

    import napari


def find_layer(viewer: napari.Viewer, name: str) -> Layer | None:
    """The layer called ``name`` in ``viewer``, or None."""
    for layer in viewer.layers:
        if layer.name == name:
            return layer
    return None


def upsert_layer(
    viewer: napari.Viewer,
    name: str,
    data: np.ndarray,
    kind: str,
    like: Layer | None = None,
    select: bool = True,
    lazy_overlays: bool = False,
    finish_later: list[Callable[[], None]] | None = None,
    **kwargs: Any,
) -> Layer:
    """Replace the data of layer ``name`` (same kind) or add a new layer.

    Parameters
    ----------
    viewer : napari.Viewer
        Target viewer.
    name : str
        Layer name; an existing layer of this name and kind is updated in place.
    data : np.ndarray
        New data.
    kind : {"labels", "image"}
        Layer type.
    like : Layer, optional
        Layer whose scale and translation a new layer copies (so that it overlays).
    select : bool
        Select a new layer, as napari does (its controls are shown). False leaves the
        selection as it is: a layer added in passing (a hidden distance map) does not
        cost the GUI thread a swap of the layer controls.
    lazy_overlays : bool
        True: a new Labels layer is appended with its painting overlays (polygon, brush
        stroke) hidden, so that napari does not build their vispy visuals in the same
        GUI-thread call as the layer. Each is shown (and built) when the user picks the
        tool that draws it: the polygon overlay for the polygon tool, the brush stroke
        for the paint brush (:func:`show_overlays_on_mode`).
    finish_later : list of callables, optional
        When given, a new layer is appended unselected and without its controls widget,
        and the steps that finish it (build its controls, then select it if ``select``)
        are appended to this list, for the caller to run in later event-loop turns: each
        costs the GUI thread as much as a part of the append (see
        :mod:`segloop.napari.layer_controls`). An updated layer adds no steps.
    **kwargs
        Passed to ``add_labels`` / ``add_image`` for a new layer; for an existing Image
        layer ``colormap`` and ``contrast_limits`` are re-applied.

    Returns
    -------
    Layer
        The updated or new layer.
    """
    existing = find_layer(viewer, name)
    if _is_kind(existing, kind):
        existing.data = data
        if kind == "image":
            for key in ("contrast_limits", "colormap"):
                if key in kwargs:
                    setattr(existing, key, kwargs[key])
        return existing
    if existing is not None:
        name = _free_name(viewer, name)
    if like is not None:
        kwargs.setdefault("scale", like.scale)
        kwargs.setdefault("translate", like.translate)
    if finish_later is not None:
        return _append_unfinished(
            viewer, name, data, kind, select, lazy_overlays, finish_later, kwargs
        )
    if kind == "labels" and lazy_overlays:
        new = _new_labels_lazy_overlays(data, name, kwargs)
        with contextlib.nullcontext() if select else _not_selected_on_insert(viewer.layers):
            viewer.layers.append(new)
        return new
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    if select:
        return add(data, name=name, **kwargs)
    with _not_selected_on_insert(viewer.layers):
        return add(data, name=name, **kwargs)


def _new_labels_lazy_overlays(data: np.ndarray, name: str, kwargs: dict) -> Layer:
    """A Labels layer whose painting overlays are built when a paint tool needs them."""
    from napari.layers import Labels

    new = Labels(data, name=name, **kwargs)
    hidden = hide_paint_overlays(new)
    if hidden:
        new.events.mode.connect(lambda _event: show_overlays_on_mode(hidden))
    return new


def _append_unfinished(
    viewer: napari.Viewer,
    name: str,
    data: np.ndarray,
    kind: str,
    select: bool,
    lazy_overlays: bool,
    finish_later: list[Callable[[], None]],
    kwargs: dict,
) -> Layer:
    """Append a new layer unselected and without its controls widget; queue the rest."""
    from napari.layers import Image

    if kind == "labels" and lazy_overlays:
        new = _new_labels_lazy_overlays(data, name, kwargs)
    elif kind == "labels":
        from napari.layers import Labels

        new = Labels(data, name=name, **kwargs)
    else:
        new = Image(data, name=name, **kwargs)
    with _not_selected_on_insert(viewer.layers), appending_without_controls(viewer):
        viewer.layers.append(new)
    finish_later.append(functools.partial(build_controls, viewer, new))
    if select:
        finish_later.append(functools.partial(_select_if_present, viewer, new))
    return new


def _select_if_present(viewer: napari.Viewer, layer: Layer) -> None:
    if layer in viewer.layers:
        viewer.layers.selection.active = layer


#: A napari Labels layer's painting overlays: napari builds a vispy visual for each
#: visible one when the layer is appended (~40 % of a Labels append's GUI time, and
#: building the polygon one alone took as long as an Image append in the profile of
#: docs/benchmarks.md).
PAINT_OVERLAYS = ("polygon", "brush_stroke")


def hide_paint_overlays(layer: Layer) -> list[Any]:
    """Hide the visible painting overlays of a Labels layer not yet in a viewer.

    napari creates an overlay's visual only once the overlay is visible, so an overlay
    hidden now is built when :func:`show_overlays_on_mode` shows it. Reads napari's
    private ``_overlays``; on a napari without it nothing is hidden (empty list).
    """
    overlays = getattr(layer, "_overlays", None)
    if not hasattr(overlays, "get"):
        return []
    hidden = []
    for key in PAINT_OVERLAYS:
        overlay = overlays.get(key)
        if overlay is not None and getattr(overlay, "visible", None) is True:
            overlay.visible = False
            hidden.append(overlay)
    return hidden


def show_overlays_on_mode(hidden: list[Any]) -> None:
    """Show, and drop from ``hidden``, the overlays that the layer's new mode draws.

    napari enables a Labels layer's polygon overlay in the polygon mode and its brush
    stroke in the paint mode (``overlay.enabled``) before it announces the mode, so a
    handler of the layer's ``mode`` event sees the new flags. An overlay without the
    flag is shown at the first mode change.
    """
    still_hidden = []
    for overlay in hidden:
        if getattr(overlay, "enabled", True):
            overlay.visible = True
        else:
            still_hidden.append(overlay)
    hidden[:] = still_hidden


@contextlib.contextmanager
def _not_selected_on_insert(layers: Any) -> Iterator[None]:
    """Layers inserted inside this block are not made the selected layer.

    napari's layer list selects every inserted layer unless its (private)
    ``_activate_on_insert`` flag is off; where a napari version lacks the flag the
    layer is selected as usual. The flag is read on the layer list itself, not through
    the ``PublicOnlyProxy`` napari hands a plugin, which would print a ``FutureWarning`` at
    every access.
    """
    layers = getattr(layers, "__wrapped__", layers)
    previous = getattr(layers, "_activate_on_insert", None)
    if not isinstance(previous, bool):
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = previous


def _is_kind(layer: Layer | None, kind: str) -> bool:
    from napari.layers import Image, Labels

    return isinstance(layer, {"labels": Labels, "image": Image}[kind])


def _free_name(viewer: napari.Viewer, name: str) -> str:
    index = 1
    while find_layer(viewer, f"{name} [{index}]") is not None:
        index += 1
    return f"{name} [{index}]"


#: Held by the GUI thread while it writes a frame into a layer's array in place, and by a
#: worker while it copies a large layer array it was handed uncopied
#: (:func:`own_copy`, :func:`copy_unwritten`): the copy then never holds half a frame.
STACK_WRITE_LOCK = threading.Lock()


#: Images up to this many values are checked for NaN etc. in the GUI thread (a few ms);
#: larger ones by the worker (``check_large=False``), whose core checks give the message.
CHECK_NOW_VALUES = 8 * 1024 * 1024


def snapshot(data: np.ndarray) -> np.ndarray:
    """A copy to hand to a worker, made now when it is small; a larger array is passed as
    it is and copied by :func:`own_copy` in the worker (a copy of a long stack would stall
    the GUI thread; the user may keep editing meanwhile, which later recounts see)."""
    return np.array(data, copy=True) if data.size <= CHECK_NOW_VALUES else data


def own_copy(data: np.ndarray | None) -> np.ndarray | None:
    """(Worker thread) A private copy of what :func:`snapshot` passed on uncopied, made
    while no frame is being written into it (:data:`STACK_WRITE_LOCK`)."""
    if data is None or data.size <= CHECK_NOW_VALUES:
        return data
    return copy_unwritten(data)


def copy_unwritten(data: Any, dtype: Any = None) -> np.ndarray:
    """(Worker thread) ``np.array(data, dtype)`` of a layer's in-memory array, made
    while no Segment frame is written into it in place (``frame_into`` writes only into
    numpy arrays, so a lazy dask or zarr array is read without the lock: its read may
    be slow, and must not hold up the GUI thread)."""
    if not isinstance(data, np.ndarray):
        return np.array(data, dtype=dtype)
    with STACK_WRITE_LOCK:
        return np.array(data, dtype=dtype, copy=True)


def holds_stack(viewer: napari.Viewer, name: str, kind: str, shape: tuple) -> bool:
    """Whether layer ``name`` is a ``kind`` layer of ``shape``: the stack
    :func:`frame_into` writes a frame into, keeping its other frames (otherwise it starts
    one from zeros, and what was recorded about the old stack's frames no longer holds)."""
    existing = find_layer(viewer, name)
    return _is_kind(existing, kind) and tuple(existing.data.shape) == tuple(shape)


def frame_into(
    viewer: napari.Viewer, name: str, kind: str, frame: np.ndarray, index: int, shape: tuple
) -> np.ndarray:
    """Full stack for layer ``name`` with frame ``index`` replaced by ``frame``.

    When the existing layer holds an in-memory array of ``shape`` and a compatible dtype,
    its frame ``index`` is written in place and that array is returned: copying a long
    stack to change one frame would cost the GUI thread a copy of every frame. An
    existing stack of ``shape`` that cannot take the frame as it is (labels read from a
    uint16 file, a lazy array) is copied into a dtype that can: its other frames, which
    may hold the user's corrections, are kept. Only a layer of another shape (or none)
    starts from zeros. The caller decides which layer may be written
    (:func:`~segloop.napari._common.writable_labels_name` never picks one with edits in
    the frames it replaces).
    """
    if holds_stack(viewer, name, kind, shape):
        current = find_layer(viewer, name).data
        if (
            isinstance(current, np.ndarray)
            and current.flags.writeable
            and np.can_cast(frame.dtype, current.dtype)
        ):
            with STACK_WRITE_LOCK:  # waits for a worker copying this stack (rare)
                current[index] = frame
            return current
        stack = np.array(current, dtype=np.promote_types(current.dtype, frame.dtype))
        stack[index] = frame
        return stack
    stack = np.zeros(shape, dtype=frame.dtype)
    stack[index] = frame
    return stack
