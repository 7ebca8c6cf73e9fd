"""Segment results: layer data prepared in the worker (no copies), layers added one per
event-loop turn, the run finished only when they are all there."""

from __future__ import annotations

import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from segloop.napari._result_layers import Stager, segment_outputs
from segloop.napari._segment_widget import SegmentWidget
from segloop.napari.layer_updates import PAINT_OVERLAYS, upsert_layer

from .conftest import THREE_DISKS, disks, noisy_image, wait_idle


def _result(distance: bool = True, uncertainty: bool = False, target: str = "instances"):
    shape = (32, 40)
    probabilities = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    seg = SimpleNamespace(
        classes=np.zeros(shape, np.uint8),
        instances=np.zeros(shape, np.int32),
        foreground=1.0 - probabilities[0],
        distance=np.ones(shape, np.float32) if distance else None,
    )
    extra = np.zeros(shape, np.float64) if uncertainty else None
    return SimpleNamespace(segmentation=seg, target=target, uncertainty=extra)


def test_outputs_are_ready_to_show_without_copies():
    result = _result(uncertainty=True)
    outputs = segment_outputs(result)
    assert [o.suffix for o in outputs] == [
        "classes",
        "foreground",
        "distance",
        "instances",
        "uncertainty",
    ]
    seg = result.segmentation
    by_name = {o.suffix: o for o in outputs}
    assert by_name["instances"].data is seg.instances  # already right: handed on as is
    assert by_name["classes"].data is seg.classes
    assert by_name["distance"].data is seg.distance
    for output in outputs:
        assert output.data.flags.c_contiguous
    assert by_name["uncertainty"].data.dtype == np.float32  # cast once, in the worker
    assert by_name["foreground"].data.dtype == np.float32
    assert by_name["distance"].style["visible"] is False
    assert by_name["foreground"].style["colormap"] == "magma"
    assert by_name["classes"].style["visible"] is False  # an instance model's class map


def test_class_model_has_no_foreground_and_shows_its_classes():
    outputs = segment_outputs(_result(distance=False, target="classes"))
    assert [o.suffix for o in outputs] == ["classes", "instances"]
    assert outputs[0].style["visible"] is True
    assert [o.select for o in outputs] == [True, False]  # the class map is what to correct


def test_only_the_instances_layer_is_selected_when_added():
    outputs = segment_outputs(_result(uncertainty=True))
    assert [o.suffix for o in outputs if o.select] == ["instances"]


def test_stager_runs_one_step_per_event_loop_turn(qtbot):
    turns = [0]
    ticker = QTimer()
    ticker.timeout.connect(lambda: turns.__setitem__(0, turns[0] + 1))
    ticker.start(0)
    seen: list[tuple[str, int]] = []
    stager = Stager(gap_ms=0)
    stager.run([lambda name=name: seen.append((name, turns[0])) for name in "abcd"])
    assert stager.busy and not seen  # nothing runs inside the call
    qtbot.waitUntil(lambda: not stager.busy, timeout=5_000)
    ticker.stop()
    assert [name for name, _ in seen] == list("abcd")
    at = [turn for _, turn in seen]
    assert all(later > earlier for earlier, later in zip(at, at[1:], strict=False)), at


def test_segment_adds_layers_over_several_turns_and_stays_running(dock, model_path, qtbot):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(model_path)
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    inserted: list[str] = []
    states: list[bool] = []

    def on_inserted(event) -> None:
        inserted.append(event.value.name)
        states.append((widget.running, widget.run_button.isEnabled()))

    viewer.layers.events.inserted.connect(on_inserted)
    active: list[str] = []
    viewer.layers.selection.events.active.connect(  # (None while napari swaps them)
        lambda event: event.value is not None and active.append(event.value.name)
    )
    job = widget.run()
    with qtbot.waitSignal(job.worker.finished, timeout=60_000):
        pass
    wait_idle(qtbot, widget)
    assert inserted == ["cells classes", "cells foreground", "cells instances"]
    assert states == [(True, False)] * 3  # busy (Run disabled) until the last layer is in
    # only the layer to correct is selected: the others do not swap the layer controls
    assert set(active) == {"cells instances"}
    assert viewer.layers.selection.active is viewer.layers["cells instances"]
    assert widget.run_button.isEnabled() and widget.progress.format() == "done"
    assert viewer.layers["cells instances"].metadata["segloop_model"] == widget.model_ref()
    # the painting overlays are not built with the layers, but when a tool needs one
    instances = viewer.layers["cells instances"]
    assert not set(_overlay_visuals(viewer, instances)) & set(PAINT_OVERLAYS)
    instances.mode = "paint"
    assert "brush_stroke" in _overlay_visuals(viewer, instances)
    instances.mode = "polygon"
    assert set(_overlay_visuals(viewer, instances)) >= set(PAINT_OVERLAYS)


def _overlay_visuals(viewer, layer) -> list[str]:
    """Names of the layer overlays napari has built a vispy visual for."""
    built = viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {})
    return [key for key, overlay in layer._overlays.items() if overlay in built]


def test_a_new_labels_layers_paint_overlays_are_built_when_a_tool_needs_them(
    make_napari_viewer,
):
    viewer = make_napari_viewer()
    layer = upsert_layer(
        viewer, "cells", np.zeros((32, 32), np.int32), "labels", lazy_overlays=True
    )
    assert not set(_overlay_visuals(viewer, layer)) & set(PAINT_OVERLAYS)  # not built yet
    layer.mode = "erase"  # draws neither
    assert not set(_overlay_visuals(viewer, layer)) & set(PAINT_OVERLAYS)
    layer.mode = "polygon"
    assert "polygon" in _overlay_visuals(viewer, layer)
    assert "brush_stroke" not in _overlay_visuals(viewer, layer)
    layer.mode = "paint"
    assert set(_overlay_visuals(viewer, layer)) >= set(PAINT_OVERLAYS)
    assert all(layer._overlays[key].visible for key in PAINT_OVERLAYS)
    # once built, the overlays stay shown in other modes
    layer.mode = "pan_zoom"
    assert all(layer._overlays[key].visible for key in PAINT_OVERLAYS)
    # without lazy_overlays a layer is added as napari adds it, overlays and all
    plain = upsert_layer(viewer, "other", np.zeros((32, 32), np.int32), "labels")
    assert set(_overlay_visuals(viewer, plain)) >= set(PAINT_OVERLAYS)


def test_adding_a_layer_from_a_plugin_does_not_warn_about_private_access(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    viewer = make_napari_viewer()
    plugin_view = PublicOnlyProxy(viewer)  # what napari hands a plugin's dock widget
    viewer.add_image(np.zeros((8, 8), np.float32), name="image")
    with warnings.catch_warnings(record=True) as caught:  # napari's filters, registry reset
        upsert_layer(plugin_view, "labels", np.zeros((8, 8), np.int32), "labels", select=False)
    assert viewer.layers.selection.active is viewer.layers["image"]  # not selected
    private = [w for w in caught if "Private attribute access" in str(w.message)]
    assert not private, [str(w.message) for w in private]


@pytest.mark.parametrize("code", ["import torch; assert torch.ones(3).sum() == 3"])
def test_preloading_torch_leaves_it_working(code):
    script = (
        "import gc, sys\n"
        "from segloop.napari._preload import preload_torch, no_full_collections\n"
        "preload_torch()\n"
        "assert 'segloop.core.segment' in sys.modules and gc.isenabled()\n"
        "assert gc.get_freeze_count() == 0\n"
        f"{code}\n"
        "with no_full_collections():\n"
        "    assert not gc.isenabled()\n"
        "assert gc.isenabled() and gc.get_freeze_count() == 0\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)


def test_stager_holds_its_windows_painting_during_a_step(qtbot):
    from qtpy.QtWidgets import QWidget

    window = QWidget()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    stager = Stager(window, gap_ms=0)
    during: list[bool] = []
    stager.run([lambda: during.append(window.updatesEnabled())] * 2)
    qtbot.waitUntil(lambda: not stager.busy, timeout=5_000)
    assert during == [False, False]  # no repaint in the step's own turn
    qtbot.waitUntil(window.updatesEnabled, timeout=5_000)  # released a turn later
    stager.hold_paint_this_turn()  # a handler that changes layers itself
    assert not window.updatesEnabled()
    stager.deleteLater()  # the release does not depend on the stager
    qtbot.waitUntil(window.updatesEnabled, timeout=5_000)
