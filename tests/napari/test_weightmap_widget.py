"""Weight map widget: the U-Net weight map of a Labels layer as an Image layer."""

from __future__ import annotations

import numpy as np

from segloop.napari._weightmap_widget import WeightMapWidget

from .conftest import THREE_DISKS, disks, errors, wait_idle


def test_weight_map_layer_and_recompute(dock, qtbot, notes):
    viewer, widget = dock(WeightMapWidget)
    close = disks([(30, 30), (30, 55)], radius=10)  # a 3 px gap between the two disks
    labels = viewer.add_labels(close, name="cells", translate=(5, 5))
    widget.run()
    wait_idle(qtbot, widget)
    layer = viewer.layers["cells weight map"]
    assert layer.data.shape == close.shape and layer.data.dtype == np.float32
    assert layer.colormap.name == "inferno"
    np.testing.assert_array_equal(layer.translate, labels.translate)
    gap, far = layer.data[30, 42], layer.data[90, 90]
    assert gap > far + 3  # border term w0 * exp(-(3 + 4)^2 / 50) = 3.75 in the gap
    assert layer.contrast_limits[1] >= gap
    # selected, with its controls, as napari adds a layer (a turn later, see _stager.py)
    assert viewer.layers.selection.active is layer
    assert layer in viewer.window._qt_viewer.controls.widgets
    assert viewer.window._qt_viewer.updatesEnabled()  # the window paints again

    widget.w0_spin.setValue(2.0)
    widget.run()
    wait_idle(qtbot, widget)
    assert len(viewer.layers) == 2 and viewer.layers["cells weight map"] is layer
    assert layer.data[30, 42] < gap
    assert not errors(notes)


def test_weight_map_of_a_stack(dock, qtbot):
    viewer, widget = dock(WeightMapWidget)
    viewer.add_labels(np.stack([disks(THREE_DISKS), disks(THREE_DISKS[:1])]), name="movie")
    widget.run()
    wait_idle(qtbot, widget)
    weights = viewer.layers["movie weight map"].data
    assert weights.shape == (2, 96, 96)
    # one object in frame 1: no border term, only the class-balance weights
    assert len(np.unique(weights[1])) == 2


def test_no_labels_layer_is_an_error(dock, notes):
    viewer, widget = dock(WeightMapWidget)
    viewer.add_image(np.zeros((32, 32)))
    assert widget.run() is None
    assert any("No labels layer" in message for message in errors(notes))
    assert len(viewer.layers) == 1


def test_four_d_labels_are_an_error(dock, notes):
    viewer, widget = dock(WeightMapWidget)
    viewer.add_labels(np.zeros((2, 2, 16, 16), np.int32), name="4d")
    assert widget.run() is None
    assert any("expected (H, W) or (T, H, W)" in message for message in errors(notes))
    assert len(viewer.layers) == 1


def test_a_new_layer_does_not_repaint_the_window_in_the_same_turn(dock, qtbot):
    viewer, widget = dock(WeightMapWidget, show=True)
    window = viewer.window._qt_window
    layer = widget.show_layer("weights", np.ones((32, 32), np.float32), "image")
    assert not window.updatesEnabled()  # held for this turn: the repaint comes after it
    assert layer not in viewer.window._qt_viewer.controls.widgets  # built a turn later
    assert widget.running  # until the layer is finished
    wait_idle(qtbot, widget)
    qtbot.waitUntil(window.updatesEnabled, timeout=2_000)  # a turn after the last step
    assert layer in viewer.window._qt_viewer.controls.widgets
    assert viewer.layers.selection.active is layer
