"""Fine-tune widget: corrections, training runs, Stop, versions, re-segmenting, errors."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt, QTimer

from segloop.napari._finetune_widget import FinetuneWidget
from segloop.napari._segment_widget import SegmentWidget, find_segment_widget
from segloop.napari.finetune_adapters import version_choices

from .conftest import THREE_DISKS, disks, errors, noisy_image, wait_idle

SHAPE = (64, 64)
CENTRES = [(16, 16), (16, 46), (46, 30)]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A very small untrained U-Net (3 levels, 8 channels) saved as the base model."""
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import ModelConfig

    path = tmp_path_factory.mktemp("base") / "base.safetensors"
    save_model(new_bundle(ModelConfig(depth=3, base_channels=8), "base"), path)
    return path


def _tiny_run(dock, model: Path, folder: Path):
    """(viewer, widget) with project ``folder``, start ``model`` and a tiny budget."""
    viewer, widget = dock(FinetuneWidget)
    widget.pairs.set_folder(folder)
    widget.options.add_model_file(model)
    budget = widget.options.budget_combo
    budget.setCurrentIndex(budget.findData("epochs"))
    widget.options.budget_spin.setValue(2)
    widget.options.crop_spin.setValue(48)
    widget.options.batch_spin.setValue(2)
    widget.config_overrides = {"val_interval_s": 1e9, "tune_postprocess": False}
    return viewer, widget


@pytest.fixture
def finetune(dock, base_model, tmp_path):
    """(viewer, widget) with a tmp project folder, the tiny base model and a tiny budget."""
    return _tiny_run(dock, base_model, tmp_path / "project")


def _pair(viewer, name: str = "cells", frames: int = 0, seed: int = 0):
    """Image + Labels layers of disks (a stack of ``frames`` frames when frames > 0)."""
    labels = disks(CENTRES, radius=8, shape=SHAPE)
    if frames:
        images = np.stack([noisy_image(labels, seed=seed + t) for t in range(frames)])
        labels = np.stack([labels] * frames)
    else:
        images = noisy_image(labels, seed=seed)
    image = viewer.add_image(images, name=name)
    return image, viewer.add_labels(labels, name=f"{name} labels")


def _minutes(widget, minutes: float) -> None:
    options = widget.options
    options.budget_combo.setCurrentIndex(options.budget_combo.findData("minutes"))
    options.budget_spin.setValue(minutes)


def _train(qtbot, widget, timeout: int = 60_000):
    job = widget.run()
    assert job is not None, "training did not start"
    wait_idle(qtbot, widget, timeout=timeout)
    return job


def test_fine_tune_adds_a_version_usable_by_segment(finetune, qtbot, notes, tmp_path):
    viewer, widget = finetune
    image, labels = _pair(viewer, "movie", frames=3)
    labels.data[1] = 0  # an empty frame is skipped
    widget.pairs.add_pair(image, labels)
    widget.pairs.frames_edit.setText("all")
    widget.config_overrides["val_interval_s"] = 0.0  # validate after every step
    with qtbot.waitSignal(widget.save_corrections().worker.finished, timeout=30_000):
        pass
    val_list = widget.options.val_list
    assert [val_list.item(i).text() for i in range(val_list.count())] == ["movie_t0", "movie_t2"]
    val_list.item(1).setCheckState(Qt.CheckState.Checked)  # hold movie_t2 out
    _train(qtbot, widget)
    assert not errors(notes), notes
    project = tmp_path / "project"
    assert sorted(p.name for p in (project / "corrections").glob("*_labels.tif")) == [
        "movie_t0_labels.tif",
        "movie_t2_labels.tif",
    ]
    assert (project / "models" / "v1.safetensors").is_file()
    assert widget.table.rowCount() == 1
    assert widget.table.item(0, 0).text() == "v1"
    assert widget.selected_version().version == 1
    assert widget.progress.format() == "done"
    loss_points, metric_points = widget.plot.n_points()
    assert loss_points > 0 and metric_points > 0  # live loss and validation curve
    held_out = widget.table.item(0, 5).text().splitlines()  # held-out scores before → after
    assert [line.split()[0] for line in held_out] == ["F1", "SEG"] and "→" in held_out[0]

    viewer.add_image(noisy_image(disks(THREE_DISKS)), name="fresh")
    widget.resegment_now()
    segment = find_segment_widget(viewer)
    assert isinstance(segment, SegmentWidget)
    assert segment.model_ref() == str((project / "models" / "v1.safetensors").resolve())
    assert segment.model_combo.currentText() == "project v1"
    wait_idle(qtbot, segment)
    assert viewer.layers["fresh instances"].data.shape == (96, 96)
    assert viewer.layers["fresh instances"].metadata["segloop_model"] == segment.model_ref()
    assert not errors(notes), notes


def test_colour_corrections_stay_in_colour_and_choose_a_conversion(dock, qtbot, notes, tmp_path):
    """An RGB pair is saved in colour, and the version records how colour became grey
    (the start model must be a trained one: a new network chooses nothing)."""
    from segloop.core.imageio import read_image
    from segloop.core.modelio import load_model, new_bundle, save_model
    from segloop.core.models import ModelConfig

    start = new_bundle(ModelConfig(depth=3, base_channels=8), "trained")
    start.metadata["training"] = {}
    model = save_model(start, tmp_path / "trained.safetensors")
    viewer, widget = _tiny_run(dock, model, tmp_path / "project")
    labels = disks(CENTRES, radius=8, shape=SHAPE)
    rgb = np.empty((*SHAPE, 3), np.uint8)
    rgb[:] = (235, 140, 190)  # eosin-pink
    rgb[labels > 0] = (95, 55, 150)  # hematoxylin-purple nuclei
    image = viewer.add_image(rgb, name="he", rgb=True)
    widget.pairs.add_pair(image, viewer.add_labels(labels, name="he labels"))
    _train(qtbot, widget)
    assert not errors(notes), notes
    project = tmp_path / "project"
    assert np.array_equal(read_image(project / "corrections" / "he.tif"), rgb)
    version = load_model(project / "models" / "v1.safetensors")
    record = version.metadata["colour_choice"]
    assert set(record["scores"]) == {"luma", "hematoxylin"}
    assert version.preprocess["colour"] == record["chosen"]
    tip = widget.table.item(0, 0).toolTip().splitlines()  # path, then what v1 chose
    assert tip[0] == str(widget.selected_version().path)
    assert tip[1].startswith(f"colour → grey: {record['chosen']} (start model's SEG")
    assert tip[1:] == version_choices(widget.selected_version())


def test_stop_mid_run_saves_a_stopped_version(finetune, qtbot, notes, tmp_path):
    viewer, widget = finetune
    widget.pairs.add_pair(*_pair(viewer))
    _minutes(widget, 5.0)
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(20)
    job = widget.run()
    assert widget.time_label.text() == ""
    qtbot.waitUntil(lambda: widget.plot.n_points()[0] >= 10, timeout=60_000)
    assert "left" in widget.time_label.text()  # about 4:59 left of the 5 minutes
    with qtbot.waitSignal(job.worker.finished, timeout=30_000):
        widget.cancel_button.click()
    timer.stop()
    assert max(np.diff(ticks)) < 0.75, "the GUI thread stalled during training"
    assert not widget.running and widget.run_button.isEnabled()
    version = tmp_path / "project" / "models" / "v1.safetensors"
    assert version.is_file()
    assert widget.versions[0].stopped
    assert widget.table.item(0, 0).text() == "v1 (stopped)"
    assert widget.progress.format().startswith("stopped")
    assert not errors(notes), notes


def test_labels_edited_during_training_are_left_alone(finetune, qtbot, tmp_path):
    from segloop.core.imageio import read_image

    viewer, widget = finetune
    image, labels = _pair(viewer)
    original = labels.data.copy()
    widget.pairs.add_pair(image, labels)
    _minutes(widget, 5.0)
    widget.run()
    qtbot.waitUntil(lambda: widget.plot.n_points()[0] >= 1, timeout=60_000)
    assert widget.running
    labels.paint((40, 5), 9, refresh=True)  # the user keeps correcting meanwhile
    labels.fill((16, 16), 0)
    edited = labels.data.copy()
    assert not np.array_equal(edited, original)
    qtbot.waitUntil(lambda: widget.plot.n_points()[0] >= 4, timeout=60_000)
    widget.cancel()  # Stop
    wait_idle(qtbot, widget, timeout=60_000)
    np.testing.assert_array_equal(labels.data, edited)  # training never wrote back
    saved = read_image(tmp_path / "project" / "corrections" / "cells_labels.tif")
    np.testing.assert_array_equal(saved, original)  # it trained on the snapshot


def test_invalid_pairs_are_refused_with_notifications(finetune, qtbot, notes, tmp_path):
    viewer, widget = finetune
    assert widget.run() is None
    assert any("No training pairs" in m or "Nothing to train" in m for m in errors(notes))
    image, _ = _pair(viewer)
    wrong = viewer.add_labels(np.zeros((32, 32), np.int32), name="wrong size")
    widget.pairs.image_combo.set_layer(image)
    widget.pairs.labels_combo.set_layer(wrong)
    widget.pairs.add_current_pair()
    assert any("64 x 64" in m and "32 x 32" in m for m in errors(notes))
    assert widget.pairs.pairs == []
    empty = viewer.add_labels(np.zeros(SHAPE, np.int32), name="empty")
    widget.pairs.add_pair(image, empty)
    assert widget.save_corrections() is None
    assert any("'empty' are empty" in m for m in errors(notes))
    assert widget.run() is None and not widget.running
    assert not list((tmp_path / "project" / "corrections").glob("*.tif"))
    assert widget.table.rowCount() == 0


def test_unwritable_folder_and_bad_model_are_errors(finetune, qtbot, notes, tmp_path):
    viewer, widget = finetune
    widget.pairs.add_pair(*_pair(viewer))
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    widget.pairs.set_folder(blocker / "project")
    _train(qtbot, widget)  # the folder is opened in the worker thread, not the GUI's
    assert any("Cannot use project folder" in m for m in errors(notes))
    assert widget.progress.format() == "failed"
    widget.pairs.set_folder(tmp_path / "project")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    widget.options.add_model_file(bad)
    _train(qtbot, widget)
    assert any("broken.safetensors" in m for m in errors(notes))
    assert widget.progress.format() == "failed" and widget.table.rowCount() == 0
    assert (tmp_path / "project" / "corrections" / "cells.json").is_file()  # nothing lost
    # an empty folder field is refused (it used to save into napari's working folder)
    widget.pairs.folder_edit.setText("  ")
    widget.pairs.folder_edit.editingFinished.emit()
    assert widget.save_corrections() is None
    assert widget.run() is None and not widget.running
    assert any("No project folder" in m for m in errors(notes))
    assert not (Path.cwd() / "corrections").exists()


def test_fine_tune_starts_from_the_segment_widgets_model(finetune, qtbot, base_model):
    viewer, widget = finetune
    _, segment = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    segment.add_model_file(base_model)
    widget.options.refresh_models()
    assert widget.options.model_combo.currentIndex() >= 0
    widget.options.model_combo.setCurrentIndex(0)
    assert "Segment widget" in widget.options.model_combo.currentText()
    assert widget.options.model_ref() == str(base_model.resolve())
    # or the shipped model that segments the corrections best ("auto", chosen in the run)
    auto = widget.options.model_combo.findData("auto")
    assert auto >= 0 and "best" in widget.options.model_combo.itemText(auto)
    widget.options.model_combo.setCurrentIndex(auto)
    assert widget.options.request(Path("p")).model == "auto"


def test_second_round_starts_from_v1_and_uses_all_corrections(finetune, qtbot, base_model):
    viewer, widget = finetune
    _, segment = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    segment.add_model_file(base_model)
    widget.options.refresh_models()
    widget.options.model_combo.setCurrentIndex(0)  # "model of the Segment widget"
    widget.pairs.add_pair(*_pair(viewer, "first"))
    _train(qtbot, widget)
    v1 = widget.versions[0].path
    assert segment.model_combo.findData(str(v1.resolve())) >= 0  # listed, not yet picked
    assert segment.model_ref() == str(base_model.resolve())
    widget.use_in_segment()
    assert segment.model_ref() == str(v1.resolve())
    widget.pairs.remove_selected()
    widget.pairs.add_pair(*_pair(viewer, "second", seed=5))
    _train(qtbot, widget)
    assert [v.version for v in widget.versions] == [1, 2]
    meta = widget.versions[1].metadata
    assert meta["parent"] == str(v1.resolve())
    tune = meta["finetune"]
    assert sorted(tune["trained_on"] + tune["validated_on"]) == ["first", "second"]
    assert widget.table.rowCount() == 2 and widget.selected_version().version == 2


def test_closing_the_dock_aborts_training_without_a_version(finetune, qtbot, tmp_path):
    viewer, widget = finetune
    widget.pairs.add_pair(*_pair(viewer))
    _minutes(widget, 5.0)
    job = widget.run()
    qtbot.waitUntil(lambda: widget.plot.n_points()[0] >= 1, timeout=60_000)
    with qtbot.waitSignal(job.worker.finished, timeout=30_000):
        viewer.window.remove_dock_widget(widget.parent())
    assert job.cancel_requested
    assert not list((tmp_path / "project" / "models").glob("v*.safetensors"))


def _strokes() -> tuple[np.ndarray, np.ndarray]:
    """Left half bright, right half dark; a few strokes of class 1 (left) and 2 (right)."""
    rng = np.random.default_rng(3)
    image = np.where(np.arange(64)[None, :] < 32, 0.8, 0.2) + rng.normal(0, 0.05, SHAPE)
    strokes = np.zeros(SHAPE, np.int32)
    strokes[8:56:12, 4:26] = 1
    strokes[8:56:12, 38:60] = 2
    return np.broadcast_to(image, SHAPE).astype(np.float32), strokes


def test_sparse_class_strokes_from_scratch_give_a_class_map(finetune, qtbot, notes):
    viewer, widget = finetune
    image_data, strokes = _strokes()
    image = viewer.add_image(image_data, name="halves")
    labels = viewer.add_labels(strokes, name="strokes")
    widget.pairs.add_pair(image, labels)
    widget.pairs.mode_combo.setCurrentIndex(widget.pairs.mode_combo.findData("sparse"))
    options = widget.options
    options.start_combo.setCurrentIndex(options.start_combo.findData("scratch"))
    assert options.lr_spin.value() == pytest.approx(1e-3)
    options.arch_combo.setCurrentIndex(options.arch_combo.findData("unet"))
    options.target_combo.setCurrentIndex(options.target_combo.findData("classes"))
    options.augment_check.setChecked(False)
    options.budget_spin.setValue(40)
    options.lr_spin.setValue(3e-3)
    _train(qtbot, widget, timeout=120_000)
    assert not errors(notes), notes
    meta = widget.versions[0].metadata
    assert meta["target"] == "classes" and meta["finetune"]["base"] == "scratch:unet"
    widget.resegment_now()
    segment = find_segment_widget(viewer)
    wait_idle(qtbot, segment)
    classes = viewer.layers["halves classes"]
    assert classes.visible and set(np.unique(classes.data)) <= {1, 2}
    assert (classes.data[:, :28] == 1).mean() > 0.9
    assert (classes.data[:, 36:] == 2).mean() > 0.9
    info = json.loads((widget.pairs.folder() / "corrections" / "halves.json").read_text())
    assert info["sparse"] is True


def test_class_names_and_layer_colours_go_into_the_version(finetune, qtbot, notes):
    viewer, widget = finetune
    image_data, strokes = _strokes()
    image = viewer.add_image(image_data, name="halves")
    labels = viewer.add_labels(strokes, name="strokes")
    painted = labels.colormap.map(np.array([1, 2]))[:, :3]
    widget.pairs.add_pair(image, labels)
    widget.pairs.mode_combo.setCurrentIndex(widget.pairs.mode_combo.findData("sparse"))
    options = widget.options
    options.start_combo.setCurrentIndex(options.start_combo.findData("scratch"))
    options.target_combo.setCurrentIndex(options.target_combo.findData("classes"))
    assert options.names_edit.isEnabled()
    options.names_edit.setText("three, names, here")
    options.budget_spin.setValue(1)
    widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert any("3 class names" in message for message in errors(notes)), notes
    assert not widget.versions
    notes.clear()
    options.names_edit.setText("bright, dark")
    _train(qtbot, widget, timeout=60_000)
    assert not errors(notes), notes
    meta = widget.versions[0].metadata
    assert meta["class_names"] == ["bright", "dark"]
    expected = ["#" + "".join(f"{round(v * 255):02x}" for v in row) for row in painted]
    assert meta["class_colors"] == expected


def test_resegmenting_and_retraining_never_lose_the_users_corrections(
    finetune, qtbot, notes, base_model, tmp_path
):
    """Segment -> correct -> Add pair -> Train -> Re-segment now with v1 -> Train again."""
    from segloop.core.imageio import read_image

    viewer, widget = finetune
    image = viewer.add_image(noisy_image(disks(CENTRES, radius=8, shape=SHAPE)), name="cells")
    _, segment = viewer.window.add_plugin_dock_widget("napari-segloop", "Segment")
    segment.add_model_file(base_model)
    segment.image_combo.set_layer(image)
    segment.run()
    wait_idle(qtbot, segment)
    instances = viewer.layers["cells instances"]
    draft = instances.data.copy()
    instances.data = disks(CENTRES, radius=8, shape=SHAPE)  # the user's corrected objects
    instances.paint((50, 10), 7, refresh=True)
    edited = instances.data.copy()
    assert not np.array_equal(edited, draft)
    widget.pairs.add_pair(image, instances)
    _train(qtbot, widget)
    saved_path = tmp_path / "project" / "corrections" / "cells_labels.tif"
    np.testing.assert_array_equal(read_image(saved_path), edited)

    widget.select_version(1)
    widget.resegment_now()  # Segment with v1 on the same image
    wait_idle(qtbot, segment)
    np.testing.assert_array_equal(viewer.layers["cells instances"].data, edited)  # kept
    redone = viewer.layers["cells instances [1]"]  # the new result went to a new layer
    assert redone.metadata["segloop_model"] == segment.model_ref()
    _train(qtbot, widget)  # re-saves the listed pair: still the user's edits
    np.testing.assert_array_equal(read_image(saved_path), edited)

    # Training on the model's unedited output never replaces the saved correction.
    widget.pairs.remove_selected()
    widget.pairs.add_pair(image, redone)
    notes.clear()
    _train(qtbot, widget)
    np.testing.assert_array_equal(read_image(saved_path), edited)
    assert any("Kept the saved correction" in message for _, message in notes), notes
    # Re-segmenting again rewrites the unedited result layer in place.
    segment.run()
    wait_idle(qtbot, segment)
    assert "cells instances [2]" not in viewer.layers
    assert not errors(notes), notes


def test_save_is_off_while_training_and_train_waits_for_a_save(finetune, qtbot, notes):
    """Train stores its own snapshot of the pairs; a Save pressed meanwhile would be
    replaced by that older snapshot, so Save is off until Train ends, and Train is
    refused while a Save is still storing."""
    viewer, widget = finetune
    widget.pairs.add_pair(*_pair(viewer))
    job = widget.run()
    assert job is not None and not widget.pairs.save_button.isEnabled()
    wait_idle(qtbot, widget, timeout=60_000)
    assert widget.pairs.save_button.isEnabled()
    save = widget.save_corrections()
    assert save is not None and not widget.pairs.save_button.isEnabled()
    assert widget.run() is None
    assert any("being saved" in message for _, message in notes), notes
    qtbot.waitUntil(lambda: widget._save_job is None, timeout=20_000)
    assert widget.pairs.save_button.isEnabled()


def _project_with_versions(folder: Path, model: Path, count: int) -> Path:
    import shutil

    (folder / "models").mkdir(parents=True)
    for number in range(1, count + 1):
        shutil.copyfile(model, folder / "models" / f"v{number}.safetensors")
    return folder


@pytest.fixture
def slow_headers(monkeypatch):
    """Header reads that wait for ``release`` and record whether the GUI thread read."""
    from segloop.core import versions

    release, reads = threading.Event(), []
    real = versions.read_metadata

    def read(path):
        reads.append(threading.current_thread() is threading.main_thread())
        release.wait(10)
        return real(path)

    monkeypatch.setattr(versions, "read_metadata", read)
    return release, reads


def test_a_picked_project_is_read_in_a_worker_then_listed(
    dock, base_model, tmp_path, qtbot, slow_headers
):
    """Opening a project whose version headers were never read does not read them in
    the GUI thread, and Train waits for them; once read, picking it again lists it at
    once."""
    from segloop.napari.adapters import UserError

    release, reads = slow_headers
    project = _project_with_versions(tmp_path / "project", base_model, 3)
    _, widget = dock(FinetuneWidget)
    widget.pairs.set_folder(project)
    assert widget._read_job is not None and widget.table.rowCount() == 0
    assert "reading its model versions" in widget.pairs.status.text()
    with pytest.raises(UserError, match="being read"):
        widget.make_job()
    release.set()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 3, timeout=10_000)
    assert reads == [False, False, False]  # each header once, none in the GUI thread
    assert widget._read_job is None and "reading" not in widget.pairs.status.text()
    widget.pairs.set_folder(tmp_path / "other")  # empty: listed at once
    assert widget.table.rowCount() == 0 and widget._read_job is None
    widget.pairs.set_folder(project)  # read before: listed at once
    assert widget.table.rowCount() == 3 and widget._read_job is None
    assert len(reads) == 3


def test_a_later_pick_cancels_the_read_of_the_earlier_one(
    dock, base_model, tmp_path, qtbot, slow_headers
):
    release, reads = slow_headers
    first = _project_with_versions(tmp_path / "first", base_model, 3)
    second = _project_with_versions(tmp_path / "second", base_model, 1)
    _, widget = dock(FinetuneWidget)
    widget.pairs.set_folder(first)
    first_job = widget._read_job
    qtbot.waitUntil(lambda: len(reads) == 1, timeout=10_000)  # blocked in its first read
    widget.pairs.set_folder(second)
    assert widget._read_job is not first_job and first_job.cancel_requested
    release.set()
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1, timeout=10_000)
    qtbot.waitUntil(lambda: first_job.finished, timeout=10_000)
    qtbot.wait(100)
    assert widget.table.rowCount() == 1  # the first project's versions never show
    assert [v.path.parent.parent for v in widget.versions] == [second]
    assert len(reads) == 2  # the first read stopped after the header it was reading


def test_a_version_written_by_another_segloop_is_listed_not_an_error(dock, tmp_path, qtbot, notes):
    """A version whose records have types this code does not expect (another segloop
    wrote it) is listed as unreadable, and selecting it shows no curve: no traceback."""
    from segloop.core.modelio import new_bundle, save_model
    from segloop.core.models import ModelConfig

    odd = new_bundle(ModelConfig(depth=3, base_channels=8), "odd")
    odd.metadata.update(
        finetune={"trained_on": ["a"], "seconds": "12"},
        history=[0.5, 0.4],
        validation=["f1"],
        colour_choice={"chosen": "luma"},
    )
    project = tmp_path / "project"
    save_model(odd, project / "models" / "v1.safetensors")
    _, widget = dock(FinetuneWidget)
    widget.pairs.set_folder(project)
    qtbot.waitUntil(lambda: widget.table.rowCount() == 1, timeout=10_000)
    assert widget.table.item(0, 0).text() == "v1"
    assert widget.table.item(0, 5).text() == "record unreadable"
    widget.table.selectRow(0)
    assert widget.selected_version().version == 1
    assert widget.plot.n_points() == (0, 0) or not widget.plot.available
    assert not errors(notes), notes
