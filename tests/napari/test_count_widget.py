"""Count widget: instance methods, table, navigation, export, live recount."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from qtpy.QtCore import Qt
from skimage.segmentation import find_boundaries

from segloop.napari._count_widget import CountWidget

from .conftest import THREE_DISKS, TWO_TOUCHING, disks, errors, wait_idle


@pytest.fixture
def count(dock):
    return dock(CountWidget)


def run(qtbot, widget, method: str | None = None) -> None:
    if method is not None:
        widget.method_combo.setCurrentIndex(widget.method_combo.findData(method))
    assert widget.run() is not None
    wait_idle(qtbot, widget)


def header_index(widget: CountWidget, header: str) -> int:
    model = widget.table.model()
    titles = [model.headerData(c, Qt.Orientation.Horizontal) for c in range(model.columnCount())]
    return titles.index(header)


def table_column(widget: CountWidget, header: str) -> list:
    """What the table shows in column ``header``, top to bottom (None: an empty cell)."""
    model, col = widget.table.model(), header_index(widget, header)
    return [model.index(row, col).data() for row in range(model.rowCount())]


def test_three_separate_disks_give_three_objects(count, qtbot, notes):
    viewer, widget = count
    viewer.add_labels((disks(THREE_DISKS) > 0).astype(np.int32), name="mask")
    run(qtbot, widget, "components")
    layer = viewer.layers["mask instances"]
    assert layer.data.dtype == np.int32 and layer.data.shape == (96, 96)
    assert viewer.layers.selection.active is layer  # the layer to correct
    assert layer.data.max() == 3
    assert widget.counted == layer and widget.count_in_frame(0) == 3
    assert widget.table.model().rowCount() == 3 and widget.summary.text().startswith("3 objects")
    assert sorted(table_column(widget, "label")) == [1, 2, 3]
    assert set(table_column(widget, "area")) == {int((disks([(48, 48)]) > 0).sum())}
    assert widget.frames_table.isHidden()
    assert not errors(notes)


def test_watershed_splits_two_touching_disks(count, qtbot):
    viewer, widget = count
    viewer.add_labels((disks(TWO_TOUCHING, radius=15) > 0).astype(np.int32), name="blob")
    run(qtbot, widget, "components")
    assert widget.count_in_frame(0) == 1
    layer = viewer.layers["blob instances"]
    run(qtbot, widget, "watershed")
    assert viewer.layers["blob instances"] is layer and len(viewer.layers) == 2
    assert layer.data.max() == 2 and widget.count_in_frame(0) == 2


def test_class_map_interior_and_border(count, qtbot, notes):
    viewer, widget = count
    labels = disks(TWO_TOUCHING, radius=15)
    class_map = (labels > 0).astype(np.uint8)
    class_map[find_boundaries(labels, mode="inner")] = 2
    viewer.add_labels(class_map, name="classes")
    run(qtbot, widget, "class_map")
    assert widget.count_in_frame(0) == 2
    viewer.add_labels(labels * 3, name="not a class map")
    widget.source_combo.set_layer(viewer.layers["not a class map"])
    run(qtbot, widget, "class_map")
    assert any("class map must hold" in message for message in errors(notes))
    assert "not a class map instances" not in [layer.name for layer in viewer.layers]


def test_mean_intensity_column(count, qtbot):
    viewer, widget = count
    labels = disks(THREE_DISKS)
    viewer.add_image(labels * 10.0, name="signal")
    viewer.add_labels(labels, name="cells")
    widget.intensity_combo.set_layer(viewer.layers["signal"])
    run(qtbot, widget, "as_is")
    assert len(viewer.layers) == 2  # counted in place, no new layer
    assert widget.counted == viewer.layers["cells"]
    rows = dict(zip(table_column(widget, "label"), table_column(widget, "intensity"), strict=True))
    assert rows == {1: 10.0, 2: 20.0, 3: 30.0}


def test_stack_counts_per_frame_and_row_click_navigates(count, qtbot):
    viewer, widget = count
    stack = np.stack([disks(THREE_DISKS), disks(THREE_DISKS[:2])])
    viewer.add_labels(stack, name="movie", scale=(1, 2, 2))
    run(qtbot, widget, "components")
    assert widget.count_in_frame(0) == 3 and widget.count_in_frame(1) == 2
    assert not widget.frames_table.isHidden() and widget.frames_table.model().rowCount() == 2
    assert "5 objects in 2 frames" in widget.summary.text()
    layer = viewer.layers["movie instances"]
    # sorted by the user: a row still leads to its own object
    widget.table.sortByColumn(header_index(widget, "y"), Qt.SortOrder.DescendingOrder)
    frames, labels = table_column(widget, "frame"), table_column(widget, "label")
    assert table_column(widget, "y") == sorted(table_column(widget, "y"), reverse=True)
    row = next(i for i in range(len(frames)) if frames[i] == 1 and labels[i] == 2)
    widget.select_row(row)
    assert layer.selected_label == 2
    assert viewer.dims.current_step[0] == 1
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (20 * 2, 70 * 2), atol=1.0)


def test_export_csv(count, qtbot, tmp_path, notes):
    viewer, widget = count
    assert widget.export_csv(tmp_path / "nothing.csv") is None  # nothing counted yet
    viewer.add_labels(disks(THREE_DISKS), name="cells")
    run(qtbot, widget, "components")
    job = widget.export_csv(tmp_path / "counts")
    qtbot.waitUntil(lambda: job.finished, timeout=20000)  # written in a worker thread
    written = tmp_path / "counts.csv"
    with open(written, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and rows[0]["source"] == "cells instances"
    assert {"label", "frame", "area", "centroid_y", "centroid_x", "mean_intensity"} <= set(rows[0])
    assert any("Wrote 3 objects" in message for _, message in notes)
    # a file that cannot be written: one error message, no traceback, nothing written
    (tmp_path / "a_file").write_text("not a folder")
    job = widget.export_csv(tmp_path / "a_file" / "counts.csv")
    qtbot.waitUntil(lambda: job.finished, timeout=20000)
    assert any("Cannot write" in message for message in errors(notes))
    assert not widget._export_jobs  # let go once done


def test_edits_update_the_counts(count, qtbot):
    viewer, widget = count
    viewer.add_labels(disks(THREE_DISKS), name="cells")
    run(qtbot, widget, "components")
    layer = viewer.layers["cells instances"]
    layer.selected_label = 4
    layer.paint((80, 10), 4)  # a brush stroke adds a fourth object
    layer.paint((80, 12), 4)
    qtbot.waitUntil(lambda: widget.count_in_frame(0) == 4, timeout=5_000)
    assert widget.table.model().rowCount() == 4
    layer.undo()  # napari undoes in place and only redraws: no paint or data event
    layer.undo()
    qtbot.waitUntil(lambda: widget.count_in_frame(0) == 3, timeout=5_000)
    layer.redo()
    qtbot.waitUntil(lambda: widget.count_in_frame(0) == 4, timeout=5_000)
    data = layer.data.copy()
    data[data == 4] = 0
    data[data == 1] = 0
    layer.data = data  # erase two objects
    qtbot.waitUntil(lambda: widget.count_in_frame(0) == 2, timeout=5_000)


def test_intensity_shape_mismatch_is_an_error(count, notes):
    viewer, widget = count
    viewer.add_labels(disks(THREE_DISKS), name="cells")
    viewer.add_image(np.zeros((50, 50)), name="small")
    widget.intensity_combo.set_layer(viewer.layers["small"])
    assert widget.run() is None
    assert any("same size" in message for message in errors(notes))
    assert [layer.name for layer in viewer.layers] == ["cells", "small"]


def test_no_labels_layer_is_an_error(count, notes):
    viewer, widget = count
    assert widget.run() is None
    assert any("No labels layer" in message for message in errors(notes))


def test_counted_layer_gets_features_and_micrometre_columns(count, qtbot):
    viewer, widget = count
    labels = disks(THREE_DISKS)
    viewer.add_labels(labels, name="cells", scale=(0.5, 0.5))
    run(qtbot, widget, "as_is")
    layer = viewer.layers["cells"]
    features = layer.features
    assert list(features["index"]) == [1, 2, 3]
    assert {"area", "area_um2", "perimeter", "solidity", "eccentricity"} <= set(features)
    np.testing.assert_allclose(features["area_um2"], features["area"] * 0.25)
    areas = dict(zip(table_column(widget, "label"), table_column(widget, "area µm²"), strict=True))
    assert areas[1] == pytest.approx(float(features["area_um2"][0]), abs=0.01)
    assert "pixel 0.5 µm" in widget.summary.text()
    # without a pixel size the µm columns are hidden
    viewer.add_labels(labels, name="no scale")
    widget.source_combo.set_layer(viewer.layers["no scale"])
    run(qtbot, widget, "as_is")
    assert widget.table.isColumnHidden(header_index(widget, "area µm²"))
    assert "area_um2" not in viewer.layers["no scale"].features


def test_counting_a_class_map_as_is_keeps_its_class_names(count, qtbot):
    """The legend's ``class`` column (which Fine-tune reads for a class model's names)
    survives the count's features; its rows follow the label values."""
    import pandas as pd

    viewer, widget = count
    layer = viewer.add_labels(disks(THREE_DISKS), name="classes")
    layer.features = pd.DataFrame({"index": [3, 1, 2], "class": ["debris", "cell", "mitosis"]})
    run(qtbot, widget, "as_is")
    features = viewer.layers["classes"].features
    assert list(features["index"]) == [1, 2, 3] and "area" in features
    assert list(features["class"]) == ["cell", "mitosis", "debris"]


def test_stack_counts_over_time_plot_and_exports(count, qtbot, tmp_path):
    from PIL import Image

    viewer, widget = count
    stack = np.stack([disks(THREE_DISKS), disks(THREE_DISKS[:2]), disks(THREE_DISKS[:1])])
    viewer.add_labels(stack, name="movie")
    run(qtbot, widget, "as_is")
    assert not widget.plot.isHidden()
    assert list(widget.plot.counts) == [3, 2, 1]
    png = widget.export_plot(tmp_path / "plot")
    assert png == tmp_path / "plot.png"
    picture = np.asarray(Image.open(png).convert("RGB"))
    assert picture.shape[:2] == (600, 1200)
    assert (np.abs(picture.astype(int) - (0x4F, 0xC3, 0xF7)).sum(axis=2) < 60).sum() > 200  # line
    job = widget.export_frame_counts(tmp_path / "per_frame.csv")
    qtbot.waitUntil(lambda: job.finished, timeout=20000)
    per_frame = tmp_path / "per_frame.csv"
    with open(per_frame, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["frame"], r["count"]) for r in rows] == [("0", "3"), ("1", "2"), ("2", "1")]
    assert (tmp_path / "per_frame.csv.json").exists()
    # label 1 exists in every frame: the features follow the current frame
    layer = viewer.layers["movie"]
    viewer.dims.set_current_step(0, 0)
    assert list(layer.features["frame"]) == [0, 0, 0]
    viewer.dims.set_current_step(0, 2)
    assert list(layer.features["frame"]) == [2] and widget.plot.current == 2


def test_two_d_layer_has_no_counts_plot(count, qtbot, notes):
    viewer, widget = count
    viewer.add_labels(disks(THREE_DISKS), name="cells")
    run(qtbot, widget, "as_is")
    assert widget.plot.isHidden() and widget.export_plot() is None
    assert any("2-D + t" in message for _, message in notes)


def test_running_again_keeps_an_edited_instances_layer(count, qtbot, notes):
    """Run writes '<labels> instances' in place only while it holds Run's own output: a
    layer the user painted in is kept, and the new result goes to a new layer."""
    viewer, widget = count
    viewer.add_labels((disks(TWO_TOUCHING, radius=15) > 0).astype(np.int32), name="blob")
    run(qtbot, widget, "components")
    layer = viewer.layers["blob instances"]
    run(qtbot, widget, "watershed")  # unedited: updated in place
    assert viewer.layers["blob instances"] is layer and len(viewer.layers) == 2
    layer.selected_label = 7
    layer.paint((5, 5), 7)  # the user's correction
    edited = layer.data.copy()
    run(qtbot, widget, "components")
    assert np.array_equal(layer.data, edited), "the edited layer was overwritten"
    new = viewer.layers["blob instances [1]"]
    assert new.data.max() == 1 and widget.counted is new
    assert any("holds your edits" in text for _, text in notes)


def test_a_big_stack_is_copied_and_checked_in_the_worker(count, qtbot, notes, monkeypatch):
    """Above CHECK_NOW_VALUES the labels and intensities are copied and scanned in the
    worker; bad values still give a clear message, never a traceback."""
    from segloop.napari import layer_updates

    monkeypatch.setattr(layer_updates, "CHECK_NOW_VALUES", 16)
    viewer, widget = count
    labels = disks(THREE_DISKS)
    image = labels.astype(np.float32)
    image[0, 0] = np.nan
    viewer.add_image(image, name="intensity")
    viewer.add_labels(labels, name="cells")
    widget.intensity_combo.set_layer(viewer.layers["intensity"])
    run(qtbot, widget, "as_is")
    qtbot.waitUntil(lambda: widget.counts is not None and not widget.running, timeout=20_000)
    assert widget.counts.total == 3
    assert any("Counting without intensities" in m and "NaN" in m for _, m in notes), notes
    bad = labels.copy()
    bad[0, 0] = -1
    viewer.layers["cells"].data = bad
    widget.counts = None
    widget.recount()
    qtbot.waitUntil(lambda: not widget.running, timeout=20_000)
    assert any("negative labels" in m for _, m in notes), notes


def test_instances_of_the_users_own_mask_are_saved_as_the_users_work(count, qtbot, notes):
    """Count's instances of a mask the user painted are written output (a re-run may
    replace them while unedited) but, saved as a correction, they are the user's work: a
    model's unedited output must never replace them. Count of a model's unedited output
    stays a model's output."""
    from segloop.napari import edits
    from segloop.napari.finetune_adapters import pair_corrections

    viewer, widget = count
    image = viewer.add_image(np.random.default_rng(0).random((96, 96)), name="cells")
    viewer.add_labels((disks(THREE_DISKS) > 0).astype(np.int32), name="painted")
    run(qtbot, widget, "components")
    painted = viewer.layers["painted instances"]
    assert painted.metadata[edits.FROM_USER_KEY] == [edits.WHOLE]
    assert not edits.has_user_edits(painted)  # unedited: a re-run may replace it
    (item,), _ = pair_corrections(image, painted, "current", 0, None)
    assert item.resolved_origin() == "user"
    widget.source_combo.set_layer(painted)  # Count of that Count: still the user's
    run(qtbot, widget, "watershed")
    chained = viewer.layers["painted instances instances"]
    assert chained.metadata[edits.FROM_USER_KEY] == [edits.WHOLE]

    model_mask = (disks(THREE_DISKS) > 0).astype(np.int32)
    segmented = viewer.add_labels(model_mask, name="cells foreground")
    edits.record_written(segmented, edits.frame_digests(model_mask), replace=True)  # as Segment
    widget.source_combo.set_layer(segmented)
    run(qtbot, widget, "components")
    derived = viewer.layers["cells foreground instances"]
    assert derived.metadata[edits.FROM_USER_KEY] == []
    (item,), _ = pair_corrections(image, derived, "current", 0, None)
    assert item.resolved_origin() == "model"
    assert not errors(notes), notes
