"""Bad input in the widgets: one notification naming the layer, no layer changed."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.napari._count_widget import CountWidget
from segloop.napari._finetune_widget import FinetuneWidget
from segloop.napari._segment_widget import SegmentWidget
from segloop.napari._weightmap_widget import WeightMapWidget

from .conftest import disks, errors, noisy_image, wait_idle


def _layer_state(viewer) -> dict:
    return {layer.name: np.asarray(layer.data).copy() for layer in viewer.layers}


def _assert_unchanged(viewer, before: dict) -> None:
    assert [layer.name for layer in viewer.layers] == list(before)
    for layer in viewer.layers:
        np.testing.assert_array_equal(np.asarray(layer.data), before[layer.name])


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("nan image", np.full((64, 64), np.nan, np.float32), "NaN"),
        ("tiny image", np.ones((4, 4), np.float32), "too small"),
        ("two channels", np.ones((64, 64, 2), np.float32), "channels"),
        # over adapters.CHECK_NOW_VALUES: checked in the worker, not the GUI thread
        ("big nan stack", np.full((2, 2048, 2100), np.nan, np.float32), "NaN"),
    ],
)
def test_segment_refuses_bad_images_naming_the_layer(
    dock, qtbot, notes, model_path, name, data, expected
):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(model_path)
    layer = viewer.add_image(data, name=name, rgb=False)
    widget.image_combo.set_layer(layer)
    before = _layer_state(viewer)
    widget.run()
    wait_idle(qtbot, widget)
    messages = errors(notes)
    assert len(messages) == 1 and name in messages[0] and expected in messages[0], messages
    _assert_unchanged(viewer, before)


def test_segment_refuses_a_tile_below_16_px(dock, qtbot, notes, model_path):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(model_path)
    widget.image_combo.set_layer(viewer.add_image(noisy_image(disks([(30, 30)])), name="cells"))
    widget.tile_spin.setValue(8)
    before = _layer_state(viewer)
    assert widget.run() is None
    assert any("Tile size 8 px" in m for m in errors(notes)), notes
    _assert_unchanged(viewer, before)


def test_weight_map_of_negative_labels_names_the_layer(dock, qtbot, notes):
    viewer, widget = dock(WeightMapWidget)
    labels = viewer.add_labels(disks([(30, 30)], shape=(64, 64)), name="signed labels")
    labels.data = labels.data.astype(np.int32) - 1  # background -1: not label data
    widget.labels_combo.set_layer(labels)
    before = _layer_state(viewer)
    assert widget.run() is None
    assert any("signed labels" in m and "negative" in m for m in errors(notes)), notes
    _assert_unchanged(viewer, before)


def test_count_without_a_labels_layer_is_a_notification(dock, qtbot, notes):
    viewer, widget = dock(CountWidget)
    viewer.add_image(noisy_image(disks([(30, 30)])), name="cells")
    before = _layer_state(viewer)
    assert widget.run() is None
    assert any("No labels layer" in m for m in errors(notes)), notes
    _assert_unchanged(viewer, before)


def test_fine_tune_of_a_nan_image_names_the_layer_and_saves_nothing(dock, qtbot, notes, tmp_path):
    viewer, widget = dock(FinetuneWidget)
    widget.pairs.set_folder(tmp_path / "project")
    image = viewer.add_image(np.full((64, 64), np.nan, np.float32), name="broken scan")
    labels = viewer.add_labels(disks([(30, 30)], shape=(64, 64)), name="broken labels")
    widget.pairs.add_pair(image, labels)
    before = _layer_state(viewer)
    assert widget.run() is None
    assert any("broken scan" in m and "NaN" in m for m in errors(notes)), notes
    _assert_unchanged(viewer, before)
    assert not list((tmp_path / "project").glob("corrections/*.tif"))
