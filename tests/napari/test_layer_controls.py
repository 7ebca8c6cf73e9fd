"""A new layer's controls widget built in a later event-loop turn, and never missing."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels
from napari.utils._proxies import PublicOnlyProxy

from segloop.napari.layer_controls import appending_without_controls, build_controls
from segloop.napari.layer_updates import _not_selected_on_insert as not_selected
from segloop.napari.layer_updates import upsert_layer


def _built(viewer, layer) -> bool:
    """Whether napari's layer-controls container holds a widget for ``layer`` (without
    building one)."""
    return dict.__contains__(viewer.window._qt_viewer.controls.widgets, layer)


def test_controls_are_built_later_or_when_napari_needs_them(make_napari_viewer):
    viewer = make_napari_viewer()
    plugin_view = PublicOnlyProxy(viewer)
    first = Labels(np.zeros((16, 16), np.int32), name="first")
    second = Image(np.zeros((16, 16), np.float32), name="second")
    with not_selected(viewer.layers), appending_without_controls(plugin_view) as held:
        plugin_view.layers.append(first)
    assert held and not _built(viewer, first)
    other = Image(np.ones((16, 16), np.float32), name="other")
    viewer.layers.append(other)  # outside the block: napari builds them as usual
    assert _built(viewer, other)
    build_controls(plugin_view, first)
    assert _built(viewer, first)
    build_controls(plugin_view, first)  # idempotent
    # never built: the user selects it, or deletes it, before the later turn
    with not_selected(viewer.layers), appending_without_controls(plugin_view):
        viewer.layers.append(second)
    assert not _built(viewer, second)
    viewer.layers.selection.active = second
    assert _built(viewer, second)
    assert (
        viewer.window._qt_viewer.controls.currentWidget()
        is (viewer.window._qt_viewer.controls.widgets[second])
    )
    third = Labels(np.zeros((16, 16), np.int32), name="third")
    with not_selected(viewer.layers), appending_without_controls(plugin_view):
        viewer.layers.append(third)
    viewer.layers.remove(third)  # no KeyError from napari's controls container
    build_controls(plugin_view, third)  # a layer that left the viewer: nothing built
    assert not _built(viewer, third)


def test_upsert_queues_the_controls_and_the_selection(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="image")
    later: list = []
    layer = upsert_layer(
        viewer, "cells", np.zeros((16, 16), np.int32), "labels", select=True, finish_later=later
    )
    assert viewer.layers.selection.active is viewer.layers["image"]
    assert not _built(viewer, layer) and len(later) == 2
    for step in later:
        step()
    assert _built(viewer, layer) and viewer.layers.selection.active is layer
    again: list = []  # an existing layer is updated in place: nothing to finish
    upsert_layer(viewer, "cells", np.ones((16, 16), np.int32), "labels", finish_later=again)
    assert again == [] and int(viewer.layers["cells"].data.max()) == 1
