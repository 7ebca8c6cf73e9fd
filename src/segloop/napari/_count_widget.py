"""Count dock widget: make instance labels, list and count the objects."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import adapters, count_adapters, edits
from ._common import JobWidget, LayerCombo, same_layer, writable_labels_name
from ._count_plot import CountsPlot
from ._count_table import CountsTableModel, counts_view
from ._notify import show_info, show_warning
from .workers import Job, Outcome, count_job, instances_job, write_job

if TYPE_CHECKING:
    import napari

#: Table columns: header -> (count-table column, decimals; None = integer, tooltip).
COLUMNS = {
    "label": ("label", None, "Label value in the counted layer"),
    "frame": ("frame", None, "Frame index (stacks)"),
    "area": ("area", None, "Area in pixels"),
    "area µm²": ("area_um2", 2, "Area in square micrometres (shown when the pixel size is known)"),
    "diam. µm": ("equivalent_diameter_um", 2, "Diameter of the disk of the same area (µm)"),
    "y": ("centroid_y", 1, "Centroid row (pixels)"),
    "x": ("centroid_x", 1, "Centroid column (pixels)"),
    "intensity": ("mean_intensity", 2, "Mean intensity of the picked image inside the object"),
    "solidity": ("solidity", 2, "Area / convex hull area (1 = convex)"),
    "eccentricity": ("eccentricity", 2, "Of the fitted ellipse: 0 = circle, towards 1 = elongated"),
}
#: Columns shown only when the pixel size is known.
MICRON_HEADERS = ("area µm²", "diam. µm")
RECOUNT_DELAY_MS = 300


class CountWidget(JobWidget):
    """Turn a class map or labels into instances, then count and measure every object.

    Run writes ``"<source> instances"`` (except for "labels as they are", which counts the
    source layer itself) and fills the table. Editing the counted layer (painting,
    filling, erasing) updates the counts after a short pause. Clicking a row selects that
    label and centres the view on the object.
    """

    run_text = "Run"
    job_name = "instance labelling"

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer)
        self.source_combo = LayerCombo(napari_viewer, Labels)
        self.intensity_combo = LayerCombo(napari_viewer, Image, allow_none=True)
        self.method_combo = QComboBox()
        for key, text in adapters.INSTANCE_METHODS.items():
            self.method_combo.addItem(text, key)
        self.method_combo.setCurrentIndex(1)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 1_000_000)
        self.min_size_spin.setToolTip("Objects with fewer pixels are removed")
        self.min_distance_spin = QSpinBox()
        self.min_distance_spin.setRange(1, 500)
        self.min_distance_spin.setValue(5)
        self.min_distance_spin.setToolTip("Watershed: least distance between two seeds (px)")
        self.form.addRow("labels", self.source_combo)
        self.form.addRow("intensity", self.intensity_combo)
        self.form.addRow("method", self.method_combo)
        self.form.addRow("min size (px)", self.min_size_spin)
        self.form.addRow("seed distance", self.min_distance_spin)
        self.summary = QLabel("no counts yet")
        self.summary.setWordWrap(True)
        self.frames_model = CountsTableModel(["frame", "count"], [None, None])
        self.frames_table = counts_view(self.frames_model)
        self.frames_table.setMaximumHeight(120)
        self.frames_table.hide()
        self.table_model = CountsTableModel(
            list(COLUMNS),
            [decimals for _, decimals, _ in COLUMNS.values()],
            [tip for _, _, tip in COLUMNS.values()],
        )
        self.table = counts_view(self.table_model)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setEnabled(False)
        self.export_button.setToolTip(
            "Every measurement of every object (pixels, and µm when the pixel size is "
            "known), with a .json side file saying how the labels were made"
        )
        self.plot = CountsPlot()
        self.plot.hide()
        self.plot_png_button = QPushButton("Plot as PNG…")
        self.plot_csv_button = QPushButton("Counts per frame as CSV…")
        plot_buttons = QHBoxLayout()
        plot_buttons.addWidget(self.plot_png_button)
        plot_buttons.addWidget(self.plot_csv_button)
        self.plot_buttons = QWidget()
        self.plot_buttons.setLayout(plot_buttons)
        plot_buttons.setContentsMargins(0, 0, 0, 0)
        self.plot_buttons.hide()
        for widget in (self.summary, self.plot, self.plot_buttons, self.frames_table):
            self.main_layout.addWidget(widget)
        for widget in (self.table, self.export_button):
            self.main_layout.addWidget(widget)
        self.method_combo.currentIndexChanged.connect(self._update_method)
        self.table.clicked.connect(lambda index: self.select_row(index.row()))
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.plot_png_button.clicked.connect(lambda: self.export_plot())
        self.plot_csv_button.clicked.connect(lambda: self.export_frame_counts())
        napari_viewer.dims.events.current_step.connect(self._on_step)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RECOUNT_DELAY_MS)
        self._timer.timeout.connect(self.recount)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self.counted: Labels | None = None
        self._history: tuple = ()  # the counted layer's undo/redo state (edits.history_state)
        self.counts: count_adapters.Counts | None = None
        self._intensity: Image | None = None
        self._request: tuple[Labels, str] | None = None
        self._count_job: Job | None = None
        self._export_jobs: set[Job] = set()
        self._recount_again = False
        self._features_frame: int | None = None
        self._update_method()

    @property
    def running(self) -> bool:
        """True while instances are made or shown, or objects are measured."""
        return super().running or self._count_job is not None

    # ------------------------------------------------------------------ run

    def method(self) -> str:
        """Key of the picked method (see ``adapters.INSTANCE_METHODS``)."""
        return str(self.method_combo.currentData())

    def _update_method(self, *_args) -> None:
        method = self.method()
        self.min_distance_spin.setEnabled(method == "watershed")
        self.min_size_spin.setEnabled(method != "as_is")

    def make_job(self, **callbacks) -> Job:
        source = self.source_combo.layer()
        labels = adapters.labels_data(source, check_large=False)
        adapters.intensity_source(labels.shape, self.intensity_combo.layer())  # shapes now
        self._request = (source, self.method())
        self.close_edit_checks()
        if self.method() != "as_is":  # which layers the result may replace: in the worker
            self.edit_checks = edits.edit_checks(self.viewer, f"{source.name} instances")
        return instances_job(
            labels,
            self.method(),
            self.min_size_spin.value(),
            self.min_distance_spin.value(),
            source.name,
            self.edit_checks,
            **callbacks,
        )

    def job_done(self, outcome: Outcome) -> None:
        source, method = self._request
        instances, digests, source_states = outcome.value
        if method == "as_is":
            layer = source
        else:
            name = writable_labels_name(
                self.viewer, f"{source.name} instances", instances.shape, checks=self.edit_checks
            )
            layer = self.show_layer(name, instances, "labels", like=source, lazy_overlays=True)
            from_user = edits.user_frames(  # instances of the user's own labels
                source_states,
                source.metadata.get(edits.WRITTEN_KEY) or {},
                source.metadata.get(edits.FROM_USER_KEY) or (),
            )
            edits.record_written(layer, digests, replace=True, from_user=from_user)
        self.close_edit_checks()
        self._intensity = self.intensity_combo.layer()
        self.track(layer)
        self.recount()

    # ------------------------------------------------------------------ counting

    def track(self, layer: Labels | None) -> None:
        """Count ``layer`` from now on and recount whenever it is edited (painted, given
        new data, or changed by napari's undo / redo, which only redraw it)."""
        if self.counted is not None:
            for emitter in (self.counted.events.data, self.counted.events.paint):
                emitter.disconnect(self._schedule_recount)
            self.counted.events.set_data.disconnect(self._on_redraw)
        self.counted = layer
        if layer is not None:
            layer.events.data.connect(self._schedule_recount)
            layer.events.paint.connect(self._schedule_recount)
            layer.events.set_data.connect(self._on_redraw)
            self._history = edits.history_state(layer)

    def _on_redraw(self, *_args) -> None:
        """A redraw of the counted layer: recount if its undo / redo lists moved (a
        redraw after a change of frame changes nothing)."""
        if self.counted is None:
            return
        history = edits.history_state(self.counted)
        if history != self._history:
            self._history = history
            self._schedule_recount()

    def _schedule_recount(self, *_args) -> None:
        self._timer.start()  # restarts: many paint strokes give one recount

    def _on_layer_removed(self, event) -> None:
        if same_layer(event.value, self.counted):
            self.track(None)
            self._timer.stop()
        if same_layer(event.value, self._intensity):
            self._intensity = None

    def recount(self) -> Job | None:
        """Measure the counted layer again (in a worker thread), then refresh the tables.

        A recount asked for while one runs is done once that one ends.
        """
        self._timer.stop()
        if self.counted is None:
            return None
        if self._count_job is not None:
            self._recount_again = True
            return None
        try:  # a long stack is copied and checked in the worker, not here
            labels = adapters.labels_data(self.counted, check_large=False)
        except adapters.UserError as exc:
            show_warning(f"Cannot count: {exc}")
            return None
        try:
            intensity = adapters.intensity_source(labels.shape, self._intensity)
        except adapters.UserError as exc:
            show_warning(f"Counting without intensities: {exc}")
            self._intensity, intensity = None, None
        pixel_size = adapters.layer_pixel_size(self._intensity, self.counted)
        layer = self.counted
        self._count_job = count_job(
            labels,
            intensity,
            pixel_size,
            layer.name,
            on_done=lambda outcome: self._counted(outcome, layer),
        )
        return self._count_job.start()

    def _counted(self, outcome: Outcome, layer: Labels) -> None:
        self._count_job = None
        if outcome.error is not None and not outcome.crashed:
            show_warning(f"Cannot count: {outcome.error}")
        elif outcome.ok and same_layer(layer, self.counted):
            counts: count_adapters.Counts
            counts, note = outcome.value
            if note:  # the intensity image was refused (NaN...): counted without it
                show_warning(note)
                self._intensity = None
            counts.source_record = layer.metadata.get(adapters.PROVENANCE_KEY)
            self.counts = counts
            self._fill_tables(counts, stack=layer.ndim == 3)
            self._set_features(force=True)
        if self._recount_again:
            self._recount_again = False
            self.recount()

    def _set_features(self, force: bool = False) -> None:
        """Give the counted layer its table as ``features`` (tooltips, other plugins)."""
        layer, counts = self.counted, self.counts
        if layer is None or counts is None:
            return
        frame = None
        if layer.ndim == 3 and counts.labels_repeat_across_frames:
            frame = adapters.current_frame(self.viewer, layer)
        if not force and frame == self._features_frame:
            return
        self._features_frame = frame
        layer.features = count_adapters.with_kept_columns(counts.features(frame), layer.features)

    def _on_step(self, *_args) -> None:
        layer = self.counted
        if layer is None or layer.ndim != 3:
            return
        self.plot.set_current(adapters.current_frame(self.viewer, layer))
        self._set_features()

    def _fill_tables(self, counts: count_adapters.Counts, stack: bool) -> None:
        table = self.table
        missing = np.full(counts.total, np.nan)
        self.table_model.set_columns(
            [counts.table.get(key, missing) for key, _, _ in COLUMNS.values()]
        )
        table.setColumnHidden(list(COLUMNS).index("frame"), not stack)
        for header in MICRON_HEADERS:
            table.setColumnHidden(list(COLUMNS).index(header), counts.pixel_size is None)
        frames = counts.frames
        self.plot.setVisible(stack)
        self.plot_buttons.setVisible(stack)
        if stack:
            self.plot.set_counts(
                frames["frame"], frames["count"], f"objects per frame: {self.counted.name}"
            )
            self.plot.set_current(adapters.current_frame(self.viewer, self.counted))
        self.frames_table.setVisible(stack)
        self.frames_model.set_columns([frames["frame"], frames["count"]])
        name = self.counted.name
        if stack:
            mean = float(np.mean(frames["count"])) if len(frames["count"]) else 0.0
            text = f"{counts.total} objects in {len(frames['frame'])} frames of '{name}'"
            text += f" (mean {mean:.1f} per frame)"
        else:
            text = f"{counts.total} objects in '{name}'"
        if counts.pixel_size is not None:
            text += f"; pixel {_size_text(counts.pixel_size)} µm"
        self.summary.setText(text)
        self.export_button.setEnabled(True)

    def count_in_frame(self, frame: int = 0) -> int:
        """Number of objects counted in ``frame`` (0 for a 2-D layer)."""
        if self.counts is None:
            return 0
        frames = self.counts.frames
        return int(frames["count"][list(frames["frame"]).index(frame)])

    # ------------------------------------------------------------------ navigation & export

    def select_row(self, row: int) -> None:
        """Select the object of table row ``row`` and centre the view on it."""
        layer = self.counted
        if layer is None or self.counts is None or not 0 <= row < self.table_model.rowCount():
            return
        index = self.table_model.data_row(row)
        frame = int(self.counts.table["frame"][index])
        label = int(self.counts.table["label"][index])
        centroid = [self.counts.table[k][index] for k in ("centroid_y", "centroid_x")]
        position = [frame, *centroid] if layer.ndim == 3 else centroid
        world = np.asarray(layer.data_to_world(position), dtype=float)
        if layer.ndim == 3:
            axis = self.viewer.dims.ndim - layer.ndim
            self.viewer.dims.set_point(axis, world[0])
        _camera(self.viewer).center = tuple(world[-2:])
        layer.selected_label = label
        self.viewer.layers.selection.active = layer

    def export_csv(self, path: str | Path | None = None) -> Job | None:
        """Write the object table as CSV (asks for a file when ``path`` is None), in a
        worker thread: a table of many objects takes the GUI thread a second or more."""

        total = 0 if self.counts is None else self.counts.total

        def done(written: Path) -> str:
            return f"Wrote {total} objects to {written}"

        write = count_adapters.write_counts
        return self._export_table(path, "_counts.csv", "Export counts", write, done)

    def export_plot(self, path: str | Path | None = None) -> Path | None:
        """Save the counts-over-time plot as PNG (asks for a file when ``path`` is None)."""
        if self.counted is not None and self.counted.ndim != 3:
            show_warning("No counts over time yet: count a 2-D + t stack first.")
            return None
        path = self._export_path(path, "_counts.png", "Save plot", "PNG (*.png)")
        if path is None:
            return None
        try:  # the plot is a Qt widget: drawn in the GUI thread (one small PNG)
            written = self.plot.save_png(path)
        except (adapters.UserError, OSError) as exc:
            self.report_error(str(exc))
            return None
        show_info(f"Wrote {written}")
        return written

    def export_frame_counts(self, path: str | Path | None = None) -> Job | None:
        """Write the objects-per-frame table as CSV (asks for a file when ``path`` is
        None), in a worker thread."""
        frames = 0 if self.counts is None else len(self.counts.frames["frame"])

        def done(written: Path) -> str:
            return f"Wrote counts of {frames} frames to {written}"

        write = count_adapters.write_frame_counts
        return self._export_table(path, "_per_frame.csv", "Counts per frame", write, done)

    def _export_path(self, path, suffix: str, title: str, kinds: str) -> str | Path | None:
        """``path``, or the file the user picks (None: nothing counted, or no file)."""
        if self.counts is None or self.counted is None:
            show_warning("Nothing to export yet: press Run first.")
            return None
        if path is None:
            default = f"{self.counted.name.replace(' ', '_')}{suffix}"
            path, _ = QFileDialog.getSaveFileName(self, title, default, kinds)
            if not path:
                return None
        return path

    def _export_table(self, path, suffix: str, title: str, write, done_text) -> Job | None:
        """Ask for a file (when ``path`` is None), then ``write(counts, path, source)`` in
        a worker; ``done_text(written)`` is shown when it has been written."""
        path = self._export_path(path, suffix, title, "CSV (*.csv)")
        if path is None:
            return None

        def done(outcome: Outcome) -> None:
            self._export_jobs.discard(job)
            if outcome.error is not None and not outcome.crashed:
                self.report_error(outcome.error)
            elif outcome.ok:
                show_info(done_text(outcome.value))

        job = write_job(write, self.counts, path, self.counted.name, on_done=done)
        self._export_jobs.add(job)  # referenced until done (its signals are bound to it)
        return job.start()


def _size_text(size: tuple[float, float]) -> str:
    y, x = size
    return f"{x:.3g}" if math.isclose(y, x, rel_tol=1e-3) else f"{y:.3g} x {x:.3g}"


def _camera(viewer: napari.Viewer):
    """The viewer's camera (``viewer.scene.camera`` from napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
