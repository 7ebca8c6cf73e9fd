"""Build a new layer's controls widget one event-loop turn after the layer is appended.

Appending a layer makes napari build, in the same call, the layer's vispy visual and its
controls widget (``QtLabelsControls`` / ``QtImageControls``, a quarter of an append's GUI
time in the profile of docs/benchmarks.md). :func:`appending_without_controls` appends a
layer with napari's controls builder held back, and :func:`build_controls` builds them
later, so that the two costs fall in separate turns of the event loop.

Nothing can break if the later step never runs: the controls container's ``widgets``
dict is given a ``__missing__`` that builds a layer's controls the first time napari
asks for them (the user selects the layer, or removes it). Everything here reads napari's
private ``QtViewer.controls``; on a napari without it, or with dynamic layer controls on,
layers are appended as usual and :func:`build_controls` does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any


class _ControlsOnDemand(dict):
    """``QtLayerControlsContainer.widgets``: builds a layer's controls when missing."""

    def __init__(self, container: Any, widgets: dict) -> None:
        super().__init__(widgets)
        self._container = container

    def __missing__(self, layer: Any) -> Any:
        self._container._add(SimpleNamespace(value=layer))  # stores them in self
        return dict.__getitem__(self, layer)


def _controls_container(viewer: Any) -> Any | None:
    """napari's layer-controls container of ``viewer``'s window, or None."""
    raw = getattr(viewer, "__wrapped__", viewer)  # a plugin gets a PublicOnlyProxy
    try:
        container = raw.window._qt_viewer.controls
    except (AttributeError, RuntimeError):  # no window, another napari, a closed one
        return None
    if not (hasattr(container, "_add") and isinstance(getattr(container, "widgets", None), dict)):
        return None
    if _dynamic_controls():
        return None  # napari builds a panel per selection then, not one per layer
    if not isinstance(container.widgets, _ControlsOnDemand):
        container.widgets = _ControlsOnDemand(container, container.widgets)
    return container


def _dynamic_controls() -> bool:
    try:
        from napari.settings import get_settings

        return bool(get_settings().experimental.dynamic_layer_controls)
    except (AttributeError, ImportError):
        return False


@contextlib.contextmanager
def appending_without_controls(viewer: Any) -> Iterator[bool]:
    """Layers appended inside this block get no controls widget yet.

    Yields True when the controls are held back (build them with :func:`build_controls`
    in a later turn), False when napari builds them as usual. Do not select a layer
    appended here in the same block: selecting it builds its controls at once.
    """
    container = _controls_container(viewer)
    if container is None:
        yield False
        return
    raw = getattr(viewer, "__wrapped__", viewer)
    with raw.layers.events.inserted.blocker(container._add):
        yield True


def build_controls(viewer: Any, layer: Any) -> None:
    """Build ``layer``'s controls widget now, unless it has them or left the viewer."""
    container = _controls_container(viewer)
    raw_layer = getattr(layer, "__wrapped__", layer)
    if container is None or dict.__contains__(container.widgets, raw_layer):
        return
    raw = getattr(viewer, "__wrapped__", viewer)
    if raw_layer in raw.layers:
        container._add(SimpleNamespace(value=raw_layer))
