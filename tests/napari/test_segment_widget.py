"""Segment widget: result layers, re-runs, stacks, errors, responsiveness and cancel."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from segloop.napari._segment_widget import LOAD_TEXT, SegmentWidget

from .conftest import THREE_DISKS, disks, errors, noisy_image, wait_idle

OUTPUTS = ("classes", "foreground", "instances")


@pytest.fixture
def segment(dock, model_path):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(model_path)
    return viewer, widget


def test_run_adds_then_updates_three_layers(segment, qtbot, notes):
    viewer, widget = segment
    image = viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells", scale=(2, 2))
    assert widget.image_combo.layer() == image
    assert widget.model_combo.currentText() == "tiny.safetensors"
    widget.run()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["cells", *(f"cells {s}" for s in OUTPUTS)]
    classes, foreground, instances = (viewer.layers[f"cells {s}"] for s in OUTPUTS)
    assert classes._type_string == "labels" and classes.data.dtype == np.uint8
    assert instances._type_string == "labels" and instances.data.dtype == np.int32
    assert foreground._type_string == "image" and foreground.data.dtype == np.float32
    for layer in (classes, foreground, instances):
        assert layer.data.shape == (96, 96)
        np.testing.assert_array_equal(layer.scale, image.scale)
    assert 0.0 <= foreground.data.min() and foreground.data.max() <= 1.0
    assert tuple(foreground.contrast_limits) == (0.0, 1.0)
    assert foreground.colormap.name == "magma"
    assert widget.device_label.text().startswith("cpu")
    assert widget.device_label.text().endswith("native scale")  # this model has no diameter
    assert widget.progress.value() == 100 and widget.run_button.isEnabled()
    assert not errors(notes)
    record = instances.metadata["segloop_provenance"]  # how the labels were made
    assert record["model"]["name"].endswith("tiny.safetensors") and record["source"] == "cells"
    assert record["pixel_size_um"] == [2.0, 2.0] and record["settings"]["device"] == "auto"

    before = [id(layer) for layer in viewer.layers]
    widget.run()
    wait_idle(qtbot, widget)
    assert [id(layer) for layer in viewer.layers] == before  # updated, not stacked


def test_uncertainty_layer_is_added_then_updated(segment, qtbot):
    viewer, widget = segment
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    widget.run()
    wait_idle(qtbot, widget)
    assert "cells uncertainty" not in [layer.name for layer in viewer.layers]  # off by default
    widget.uncertainty_check.setChecked(True)
    widget.run()
    wait_idle(qtbot, widget)
    layer = viewer.layers["cells uncertainty"]
    assert layer._type_string == "image" and layer.colormap.name == "magma"
    assert tuple(layer.contrast_limits) == (0.0, 1.0)
    assert layer.data.shape == (96, 96) and layer.data.dtype == np.float32
    assert 0.0 <= layer.data.min() and layer.data.max() <= 1.0 and layer.data.max() > 0
    n_layers = len(viewer.layers)
    widget.run()
    wait_idle(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["cells uncertainty"] is layer


def test_rgb_image(segment, qtbot):
    viewer, widget = segment
    grey = (noisy_image(disks(THREE_DISKS)) * 200).clip(0, 255).astype(np.uint8)
    viewer.add_image(np.stack([grey, grey // 2, grey], axis=-1), name="he", rgb=True)
    widget.run()
    wait_idle(qtbot, widget)
    assert viewer.layers["he instances"].data.shape == (96, 96)


def test_colour_choice_reaches_the_run(segment, qtbot, notes):
    """'colour → grey' changes what the network sees of an RGB image."""
    viewer, widget = segment
    grey = (noisy_image(disks(THREE_DISKS)) * 200).clip(0, 255).astype(np.uint8)
    viewer.add_image(np.stack([255 - grey // 3, 255 - grey, 255 - grey // 4], -1), rgb=True)
    name = viewer.layers[-1].name
    widget.run()
    wait_idle(qtbot, widget)
    luma = np.array(viewer.layers[f"{name} foreground"].data, copy=True)
    widget.colour_combo.setCurrentText("hematoxylin (H&E)")
    widget.run()
    wait_idle(qtbot, widget)
    assert not np.allclose(viewer.layers[f"{name} foreground"].data, luma)
    assert widget._settings["colour"] == "hematoxylin"
    from segloop.napari._segment_widget import PROVENANCE_KEY

    record = viewer.layers[f"{name} instances"].metadata[PROVENANCE_KEY]
    assert record["colour_used"] == "hematoxylin"
    assert not errors(notes)


def test_stack_current_frame_then_whole_stack(segment, qtbot):
    viewer, widget = segment
    stack = np.stack([noisy_image(disks(THREE_DISKS), seed=t) for t in range(3)])
    viewer.add_image(stack, name="movie")
    assert widget.scope_combo.isEnabled()
    viewer.dims.set_current_step(0, 1)
    widget.scope_combo.setCurrentText("current frame")
    widget.run()
    wait_idle(qtbot, widget)
    foreground = viewer.layers["movie foreground"].data
    assert foreground.shape == (3, 96, 96)
    assert foreground[1].any() and not foreground[0].any() and not foreground[2].any()
    widget.scope_combo.setCurrentText("whole stack")
    widget.run()
    wait_idle(qtbot, widget)
    foreground = viewer.layers["movie foreground"].data
    assert all(frame.any() for frame in foreground)
    assert len(viewer.layers) == 4
    # another frame run writes its frame into the same array: no copy of the stack in
    # the GUI thread, and the other frames stay as they were
    others = foreground[[0, 2]].copy()
    foreground[1] = 0
    widget.scope_combo.setCurrentText("current frame")
    widget.run()
    wait_idle(qtbot, widget)
    assert viewer.layers["movie foreground"].data is foreground
    assert foreground[1].any()
    np.testing.assert_array_equal(foreground[[0, 2]], others)


def test_no_image_layer_is_an_error(segment, notes):
    viewer, widget = segment
    assert widget.run() is None
    assert any("No image layer" in message for message in errors(notes))
    assert len(viewer.layers) == 0


def test_wrong_dims_is_an_error(segment, notes):
    viewer, widget = segment
    viewer.add_image(np.zeros((2, 3, 32, 32), np.float32), name="4d")
    assert widget.run() is None
    assert any("Unsupported image shape" in message for message in errors(notes))
    assert len(viewer.layers) == 1


def test_bad_model_file_is_an_error_and_changes_nothing(segment, qtbot, notes, tmp_path):
    viewer, widget = segment
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    widget.run()
    wait_idle(qtbot, widget)
    data_before = viewer.layers["cells instances"].data.copy()
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model")
    widget.add_model_file(bad)
    widget.run()
    wait_idle(qtbot, widget)
    assert any("broken.safetensors" in message for message in errors(notes))
    assert len(viewer.layers) == 4
    np.testing.assert_array_equal(viewer.layers["cells instances"].data, data_before)
    assert widget.progress.format() == "failed"


def test_unavailable_device_is_an_error(segment, qtbot, notes):
    from segloop.core.device import available_devices

    missing = [name for name in ("cuda", "mps") if name not in available_devices()]
    if not missing:
        pytest.skip("every device is available here")
    viewer, widget = segment
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    widget.device_combo.setCurrentText(missing[0])
    widget.run()
    wait_idle(qtbot, widget)
    assert any("not available" in message for message in errors(notes))
    assert len(viewer.layers) == 1


def test_load_model_entry_opens_a_file_dialog(segment, monkeypatch, model_path):
    _, widget = segment
    from qtpy.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    load_index = widget.model_combo.findText(LOAD_TEXT)
    widget.model_combo.setCurrentIndex(load_index)
    widget._on_model_activated(load_index)  # cancelled dialog: back to the previous model
    assert widget.model_ref() == str(model_path.resolve())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(model_path), ""))
    widget._on_model_activated(load_index)
    assert widget.model_combo.findText(LOAD_TEXT) == widget.model_combo.count() - 1
    assert widget.model_combo.count() == load_index + 1  # the same file is not added twice


def test_general_nuclei_model_is_picked_first(dock):
    """A new user pressing Run on the nuclei sample must not get the E. coli model."""
    from segloop.napari import adapters

    _, widget = dock(SegmentWidget)
    names = adapters.shipped_model_names()
    if "nuclei" not in names:
        pytest.skip("nuclei model not shipped")
    assert names[0] == "nuclei" and sorted(names[1:]) == names[1:]
    assert widget.model_ref() == "nuclei"


def test_no_model_is_an_error(dock, notes):
    viewer, widget = dock(SegmentWidget)
    viewer.add_image(np.zeros((32, 32), np.float32))
    widget.model_combo.setCurrentIndex(widget.model_combo.findText(LOAD_TEXT))
    assert widget.run() is None
    assert any("No model" in message for message in errors(notes))


def _long_stack(n_frames: int = 2) -> np.ndarray:
    """Big enough that the model needs seconds (many 128 px tiles per frame)."""
    labels = disks(THREE_DISKS, shape=(512, 512))
    return np.stack([noisy_image(labels, seed=t) for t in range(n_frames)])


def test_gui_stays_responsive_and_second_run_is_refused(segment, qtbot, notes):
    viewer, widget = segment
    viewer.add_image(_long_stack(), name="big")
    widget.scope_combo.setCurrentText("whole stack")
    widget.tile_spin.setValue(128)
    ticks: list[float] = []
    changes: list[tuple[float, int]] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    widget.progress.valueChanged.connect(lambda value: changes.append((time.perf_counter(), value)))
    start = time.perf_counter()
    timer.start(20)
    job = widget.run()
    assert job is not None
    assert widget.run() is None  # refused while running
    assert any("already running" in message for _, message in notes)
    wait_idle(qtbot, widget, timeout=120_000)
    timer.stop()
    # While the worker computes (until the last progress update; adding the result layers
    # afterwards is napari's work in the GUI thread) the 20 ms timer must keep firing.
    end = changes[-1][0]
    during = [tick for tick in ticks if tick <= end]
    assert len(during) >= max(5, 0.25 * (end - start) / 0.020), (len(during), end - start)
    assert max(np.diff([start, *during, end])) < 0.75, "the GUI thread stalled"
    assert len({value for _, value in changes}) >= 4, f"progress did not move: {changes}"
    assert viewer.layers["big instances"].data.shape == (2, 512, 512)


def test_cancel_stops_a_long_run(segment, qtbot, notes):
    viewer, widget = segment
    viewer.add_image(_long_stack(6), name="big")
    widget.scope_combo.setCurrentText("whole stack")
    widget.tile_spin.setValue(128)
    job = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=60_000)
    with qtbot.waitSignal(job.worker.finished, timeout=30_000):
        widget.cancel_button.click()
    assert not widget.running and widget.run_button.isEnabled()
    assert widget.progress.format() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["big"]
    assert any("cancelled" in message for _, message in notes)
    assert not errors(notes)


@pytest.mark.slow
def test_trained_model_finds_and_counts_three_disks(dock, qtbot, disk_model, notes):
    """End to end with a model trained on disks (root conftest): segment, then count."""
    from segloop.napari._count_widget import CountWidget

    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(disk_model)
    viewer.add_image(noisy_image(disks(THREE_DISKS, radius=8)) + 0.1, name="cells")
    widget.run()
    wait_idle(qtbot, widget, timeout=60_000)
    instances = viewer.layers["cells instances"].data
    assert instances.max() == 3
    _, counter = viewer.window.add_plugin_dock_widget("napari-segloop", "Count")
    counter.source_combo.set_layer(viewer.layers["cells instances"])
    counter.method_combo.setCurrentIndex(counter.method_combo.findData("as_is"))
    counter.run()
    wait_idle(qtbot, counter)
    assert counter.count_in_frame(0) == 3
    assert not errors(notes)
    assert isinstance(counter, CountWidget)


def test_closing_the_dock_cancels_the_run(segment, qtbot):
    viewer, widget = segment
    viewer.add_image(_long_stack(6), name="big")
    widget.scope_combo.setCurrentText("whole stack")
    widget.tile_spin.setValue(128)
    job = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=60_000)
    with qtbot.waitSignal(job.worker.finished, timeout=30_000):
        viewer.window.remove_dock_widget(widget.parent())
    assert job.cancel_requested
    assert [layer.name for layer in viewer.layers] == ["big"]


@pytest.fixture(scope="module")
def class_model_path(tmp_path_factory):
    """An untrained 3-class model with class names and colours in its metadata."""
    from segloop.core.classes import class_style_metadata
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import preset

    bundle = new_bundle(preset("unet", n_classes=3), "three", target="classes")
    names, colors = ["nucleus", "cytoplasm", "debris"], ["#ff0000", "#00ff00", "#0000ff"]
    bundle.metadata.update(class_style_metadata(3, names, colors))
    path = tmp_path_factory.mktemp("classmodel") / "three.safetensors"
    save_model(bundle, path)
    return path


def test_class_model_legend_and_unknown_threshold(dock, class_model_path, qtbot, notes):
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(class_model_path)
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    widget.run()
    wait_idle(qtbot, widget)
    classes = viewer.layers["cells classes"]
    assert classes.visible and set(np.unique(classes.data)) <= {1, 2, 3}  # "off": no 0
    # The model's colours paint the class map and the status bar names the class.
    rgba = classes.colormap.map(np.array([0, 1, 2, 3]))
    np.testing.assert_allclose(rgba[1:, :3], np.eye(3), atol=1e-6)
    assert rgba[0, 3] == 0  # unknown is transparent
    features = classes.features.set_index("index")["class"].to_dict()
    assert features == {0: "unknown", 1: "nucleus", 2: "cytoplasm", 3: "debris"}
    value = int(classes.data[48, 48])
    assert f"class: {features[value]}" in classes._get_properties((48, 48))
    # An untrained network is unsure everywhere: a high threshold leaves every pixel 0.
    widget.unknown_spin.setValue(0.95)
    widget.run()
    wait_idle(qtbot, widget)
    assert not classes.data.any()
    assert classes.features.shape[0] == 4  # legend re-applied on the updated layer
    assert not errors(notes)


def test_object_size_and_flip_averaging_choices(dock, qtbot, rescaled_disk_model, notes):
    """Typed diameter, 'measure (auto)' and flip averaging reach the run."""
    from segloop.core.scale import estimate_diameter

    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(rescaled_disk_model)
    big = disks([(60, 60), (60, 180), (180, 120)], radius=40, shape=(240, 240))
    viewer.add_image(noisy_image(big) + 0.1, name="cells")
    assert widget.diameter_choice() is None and not widget.diameter_spin.isEnabled()
    widget.size_combo.setCurrentText("diameter (px)")
    assert widget.diameter_spin.isEnabled()
    widget.diameter_spin.setValue(80.0)
    widget.tta_combo.setCurrentText("on (8x slower)")
    widget.run()
    wait_idle(qtbot, widget, timeout=60_000)
    assert widget.device_label.text().endswith("object diameter 80 px")
    assert viewer.layers["cells instances"].data.max() == 3
    widget.size_combo.setCurrentText("measure (auto)")
    assert widget.diameter_choice() == "auto" and not widget.diameter_spin.isEnabled()
    widget.run()
    wait_idle(qtbot, widget, timeout=60_000)
    measured = float(widget.device_label.text().split("object diameter ")[1].split()[0])
    assert measured == pytest.approx(estimate_diameter(big), rel=0.2)
    assert viewer.layers["cells instances"].data.max() == 3
    assert not errors(notes)


def test_distance_head_model_adds_a_hidden_distance_layer(dock, qtbot, model_path, tmp_path):
    from segloop.core.modelio import load_model, save_model, with_distance_head

    path = save_model(with_distance_head(load_model(model_path)), tmp_path / "dist.safetensors")
    viewer, widget = dock(SegmentWidget)
    widget.add_model_file(path)
    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="cells")
    widget.run()
    wait_idle(qtbot, widget)
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "cells",
        "cells classes",
        "cells foreground",
        "cells distance",
        "cells instances",
    ]
    distance = viewer.layers["cells distance"]
    assert distance.data.shape == (96, 96) and distance.data.dtype == np.float32
    assert not distance.visible and 0.0 <= distance.data.min() <= distance.data.max() <= 1.0


def test_used_line_says_native_scale_when_nothing_was_rescaled():
    from segloop.napari._segment_widget import _diameter_text

    assert _diameter_text([18.0, 18.0], [1.0, 1.0]) == "native scale"  # the model's size
    assert _diameter_text([36.0, 30.0, 40.0], [0.5, 0.6, 0.45]) == "object diameter 36 px"
    assert _diameter_text([None], [1.0]) == "native scale"


def _current_frame_run_beside(segment, qtbot, labels: np.ndarray, frame: int) -> None:
    """Add ``labels`` as 'movie instances' and a 3-frame 'movie', then segment ``frame``."""
    viewer, widget = segment
    viewer.add_labels(labels, name="movie instances")
    stack = np.stack([noisy_image(disks(THREE_DISKS), seed=t) for t in range(3)])
    viewer.add_image(stack, name="movie")
    viewer.dims.set_current_step(0, frame)
    widget.scope_combo.setCurrentText("current frame")
    widget.run()
    wait_idle(qtbot, widget)


def test_a_frame_run_keeps_the_other_frames_of_uint16_labels(segment, qtbot, notes):
    """'movie instances' opened from a uint16 file (what the writer saves), corrected in
    frame 0: a current-frame run on the empty frame 2 writes that frame and keeps frame 0
    (it used to start from a stack of zeros when the dtype could not take int32)."""
    viewer, widget = segment
    old = np.zeros((3, 96, 96), np.uint16)
    old[0, 10:20, 10:20] = 3  # the user's correction
    _current_frame_run_beside(segment, qtbot, old, frame=2)
    result = viewer.layers["movie instances"].data
    np.testing.assert_array_equal(result[0], old[0])
    assert result[2].max() > 0 and not result[1].any()
    assert not errors(notes), notes


def test_a_frame_run_never_replaces_an_edited_layer_of_another_shape(segment, qtbot, notes):
    """'movie instances' left from another 'movie' (5 frames, edited in frame 4): a
    current-frame run on a new 3-frame 'movie' would replace the whole stack, so the old
    layer is kept and the result goes to a new layer (no IndexError on frame 4 either)."""
    viewer, widget = segment
    old = np.zeros((5, 96, 96), np.int32)
    old[4, 10:20, 10:20] = 3  # the user's painting, never written by Segment
    _current_frame_run_beside(segment, qtbot, old, frame=1)
    np.testing.assert_array_equal(viewer.layers["movie instances"].data, old)
    assert viewer.layers["movie instances [1]"].data.shape == (3, 96, 96)
    assert not errors(notes), notes


def test_a_frame_run_into_a_new_stack_forgets_the_old_stacks_frames(segment, qtbot, notes):
    """Segment all of a 2-frame 'movie', then open a 3-frame 'movie' and segment frame 2:
    the result starts a new stack of zeros, so what was recorded about the old stack's
    frames 0-1 must go. Kept, it made their empty frames look like frames the user had
    emptied ("nothing here"), which Save would store as the user's corrections."""
    from segloop.napari import edits

    viewer, widget = segment
    short = np.stack([noisy_image(disks(THREE_DISKS), seed=t) for t in range(2)])
    widget.image_combo.set_layer(viewer.add_image(short, name="movie"))
    widget.scope_combo.setCurrentText("whole stack")
    widget.run()
    wait_idle(qtbot, widget)
    assert viewer.layers["movie instances"].data.shape == (2, 96, 96)
    viewer.layers.remove("movie")
    longer = np.stack([noisy_image(disks(THREE_DISKS), seed=t) for t in range(3)])
    widget.image_combo.set_layer(viewer.add_image(longer, name="movie"))
    viewer.dims.set_current_step(0, 2)
    widget.scope_combo.setCurrentText("current frame")
    widget.run()
    wait_idle(qtbot, widget)
    layer = viewer.layers["movie instances"]  # unedited, so Segment wrote into it
    assert layer.data.shape == (3, 96, 96) and not layer.data[:2].any()
    assert not edits.has_user_edits(layer)
    assert not errors(notes), notes
