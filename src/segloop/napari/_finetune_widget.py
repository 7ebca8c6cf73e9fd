"""Fine-tune dock widget: save corrected labels, retrain, compare versions, re-segment.

The loop: segment an image (Segment widget), fix the labels with napari's brush, eraser
and fill, add the (image, labels) pair here and *Save corrections*, then *Train*: the
model is fine-tuned (or a new one trained from scratch) on every correction saved in the
project folder so far, in a background thread with a live loss plot. Each run saves the
next version ``models/v<N>.safetensors``; the version table compares them and sends any
of them back to the Segment widget.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from . import adapters, finetune_adapters, train_adapters
from ._common import JobWidget
from ._finetune_panels import OptionsPanel, PairsPanel
from ._loss_plot import LossPlot, validation_point
from ._notify import show_error, show_info, show_warning
from ._segment_widget import MODEL_KEY, SegmentWidget, find_segment_widget
from .legend import layer_class_colors, layer_class_names
from .train_adapters import TrainOutput, remaining_seconds
from .workers import Job, Outcome, TrainJob, read_project_job, save_job

if TYPE_CHECKING:
    from pathlib import Path

    import napari
    from segloop.core.progress import Progress

PLUGIN = "napari-segloop"
COLUMNS = {
    "version": "Model version (v1, v2…); '(stopped)' = ended early with Stop",
    "created": "When the version was saved",
    "images": "Corrected images trained on (+ held out for validation)",
    "objects": "Objects in the corrected training images",
    "time": "Training time",
    "held-out": "F1 at IoU 0.5 and CTC SEG on the held-out corrections: start model → this version",
    "base validation": "F1 and SEG on the start model's own validation images "
    "(forgetting would show here): start model → this version",
}
VERSIONS_TAB = 2
STAGE_TEXT = {
    "load model": "checking the model",
    "prepare": "preparing the training images",
    "validate": "validating",
    "tune": "tuning post-processing",
}


class FinetuneWidget(JobWidget):
    """Correct-and-retrain: training pairs, project folder, options, live plot, versions.

    Tests (and scripts) may set :attr:`config_overrides`, e.g.
    ``{"val_interval_s": 1.0}``, to pass extra ``TrainConfig`` fields.
    """

    run_text = "Train"
    job_name = "training"

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer)
        self.config_overrides: dict = {}
        self.versions: list[finetune_adapters.Version] = []
        self.cancel_button.setText("Stop")
        self.cancel_button.setToolTip(
            "End training now: the best model so far is scored and saved as a new version"
        )
        self.run_button.setToolTip(
            "Save the listed pairs, then train on ALL corrections of the project folder"
        )
        self.pairs = PairsPanel(napari_viewer)
        self.options = OptionsPanel(napari_viewer)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.pairs, "1 · Corrections")
        self.tabs.addTab(self.options, "2 · Training")
        self.main_layout.insertWidget(0, self.tabs)
        self.time_label = QLabel("")
        self.plot = LossPlot()
        self.table = _table(list(COLUMNS))
        self.use_button = QPushButton("Use in Segment")
        self.use_button.setToolTip("Make the selected version the Segment widget's model")
        self.resegment_button = QPushButton("Re-segment now")
        self.resegment_button.setToolTip("Use the selected version and run Segment on its image")
        self._add_results_area()
        self._events: dict = {}
        self._save_job: Job | None = None
        self._read_job: Job | None = None  # reading a newly picked project's versions
        self._job_folder: Path | None = None  # the project of the last save or Train
        self.pairs.save_button.clicked.connect(self.save_corrections)
        self.pairs.folder_edit.editingFinished.connect(self.load_project)
        self.table.itemSelectionChanged.connect(self._on_version_selected)
        self.use_button.clicked.connect(self.use_in_segment)
        self.resegment_button.clicked.connect(self.resegment_now)
        self.load_project()

    def _add_results_area(self) -> None:
        """Live plot under the Train button; the version table as the third tab.

        Stacking the versions under the plot made the dock ~800 px tall, more than a
        1366 x 768 screen has; as a tab it takes no height of its own.
        """
        self.main_layout.addWidget(self.time_label)
        self.main_layout.addWidget(self.plot)
        versions = QWidget()
        layout = QVBoxLayout(versions)
        layout.addWidget(QLabel("Select a version to see its curve, compare or use it"))
        layout.addWidget(self.table)
        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.resegment_button)
        layout.addLayout(buttons)
        self.tabs.addTab(versions, "3 · Versions")
        self._on_version_selected()

    # ------------------------------------------------------------------ corrections

    def _snapshot(self) -> list[finetune_adapters.Correction]:
        """Copies of the chosen frames of every pair (checked before anything is saved)."""
        if not self.pairs.pairs:
            raise adapters.UserError(
                "No training pairs: pick an image and its corrected labels in "
                "'1 · Corrections' and press 'Add pair'."
            )
        corrections, skipped = [], []
        for image, labels in self.pairs.pairs:
            if image not in self.viewer.layers or labels not in self.viewer.layers:
                continue
            current = adapters.current_frame(self.viewer, labels) if labels.ndim == 3 else 0
            model = labels.metadata.get(MODEL_KEY)
            items, empty = finetune_adapters.pair_corrections(
                image, labels, self.pairs.frames_edit.text(), current, model, self.pairs.sparse()
            )
            corrections += items
            skipped += [f"{labels.name}[{frame}]" for frame in empty]
        if skipped:
            show_info(f"Skipped frames with empty labels: {', '.join(skipped)}")
        return corrections

    def save_corrections(self) -> Job | None:
        """Store the chosen frames of every pair in the project (in a worker thread).

        Returns the started job (None when the pairs were refused). A frame that only
        holds a model's unedited output never replaces a saved correction.
        """
        try:
            folder, sparse = self.pairs.folder(), self.pairs.sparse()
            corrections = self._snapshot()
        except adapters.UserError as exc:
            self.report_error(str(exc))
            return None
        self.pairs.save_button.setEnabled(False)
        self._job_folder = folder
        self._save_job = save_job(folder, corrections, sparse, on_done=self._saved)
        return self._save_job.start()

    def _saved(self, outcome: Outcome) -> None:
        self._save_job = None
        self.pairs.save_button.setEnabled(not self.running)
        if outcome.error is not None:
            if not outcome.crashed:
                self.report_error(outcome.error)
            return
        if outcome.cancelled:
            return
        saved, kept = outcome.value
        self.refresh_project()
        _report_saved(self._job_folder, saved, kept)

    # ------------------------------------------------------------------ training

    def make_job(self, **callbacks) -> TrainJob:
        """Snapshot the pairs and the options (GUI thread); saving and training run in
        the worker."""
        if self._save_job is not None:  # its older snapshot must not land after Train's
            raise adapters.UserError("Corrections are being saved; press Train again in a moment.")
        if self._read_job is not None:
            raise adapters.UserError(
                "The project folder's model versions are being read; press Train again in a moment."
            )
        self.options.refresh_models(self.versions)
        request = self.options.request(self.pairs.folder())
        self._job_folder = request.folder
        if self.pairs.pairs:
            request.corrections = self._snapshot()
            request.sparse = self.pairs.sparse()
        elif not finetune_adapters.correction_ids(request.folder):  # a glob: well under 1 ms
            raise adapters.UserError(
                "Nothing to train on: add a pair (image + corrected labels) in "
                "'1 · Corrections', or pick a project folder with saved corrections."
            )
        request.overrides = dict(self.config_overrides)
        if request.target == "classes" and self.pairs.pairs:
            request.class_colors = layer_class_colors(
                self.pairs.pairs[0][1], train_adapters.DEFAULTS.max_classes
            )
            request.layer_class_names = layer_class_names(self.pairs.pairs[0][1])
        self.plot.clear("accuracy" if request.target == "classes" else "F1")
        self._events = {"start": time.monotonic(), "minutes": request.minutes, "trained": False}
        self.time_label.setText("")
        return TrainJob(request, on_event=self._on_event, on_done=callbacks["on_done"])

    def _set_running(self, running: bool) -> None:
        """Save stays off while a Train runs: Train stores its own snapshot of the pairs,
        and a newer save must not be replaced by it."""
        super()._set_running(running)
        self.pairs.save_button.setEnabled(not running and self._save_job is None)

    def _on_event(self, event: Progress) -> None:
        data = event.data or {}
        if event.stage == "train":
            self._events["trained"] = True
            fraction = event.fraction
            self.progress.setValue(int(round(100 * fraction)))
            self.progress.setFormat(f"%p%  step {data.get('step')}  loss {data.get('loss', 0):.4f}")
            self.plot.add_loss(data.get("step", 0), data.get("loss", 0.0))
            self._events["step"] = data.get("step", 0)
            self._show_time(fraction, float(data.get("seconds", 0.0)))
        elif not (isinstance(self.job, TrainJob) and self.job.control.stop_requested):
            text = STAGE_TEXT.get(event.stage) or event.message or event.stage
            if event.stage == "choose start":  # start "auto": the shipped models are scored
                done = event.done >= event.total
                self._events["choosing"] = None if done else event.message
            elif event.stage in ("evaluate", "segment") or event.stage.startswith(
                ("frame", "pred")
            ):
                trained = self._events.get("trained")
                text = "evaluating the new model" if trained else "scoring the start model"
                if self._events.get("choosing"):
                    text = f"choosing the start model: {self._events['choosing']}"
            self.progress.setFormat(f"%p%  {text}…")
        point = validation_point(data)
        if point is not None:
            self.plot.add_metric(self._events.get("step", 0), *point)

    def _show_time(self, fraction: float, elapsed: float) -> None:
        left = remaining_seconds(fraction, elapsed, self._events.get("minutes"))
        text = f"elapsed {_clock(elapsed)}"
        if left is not None:
            text += f"  ·  about {_clock(left)} left"
        self.time_label.setText(text)

    def cancel(self) -> None:
        """Stop: end training at the next step; the best weights so far become a version."""
        job = self.job
        if isinstance(job, TrainJob):
            job.request_stop()
            self.cancel_button.setEnabled(False)
            self.progress.setFormat("stopping… the best model so far will be saved")

    def abort(self) -> None:
        """Abort the run entirely (closing the widget); nothing is saved."""
        self._cancel_read()
        if self.job is not None:
            self.job.cancel()

    def closeEvent(self, event) -> None:
        self.abort()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self.abort()
        return super().event(event)

    def _on_done(self, outcome: Outcome) -> None:
        if outcome.cancelled:
            self.job = None
            self._set_running(False)
            self.progress.setFormat("cancelled")
            show_info("Training cancelled; no version was saved.")
            self.refresh_project()
            return
        super()._on_done(outcome)
        if outcome.error is not None:
            self.refresh_project()  # the corrections may have been saved before the error

    def job_done(self, outcome: Outcome) -> None:
        result: TrainOutput = outcome.value
        self.refresh_project(select=result.version.version if result.version else None)
        if result.kept:
            _report_saved(self._job_folder, result.saved, result.kept)
        if result.version is None:
            self.progress.setFormat("stopped before training: nothing saved")
            show_info("Training stopped before its first step; no version was saved.")
            return
        version = result.version
        self.progress.setFormat("stopped: best model saved" if result.stopped else "done")
        self.time_label.setText(f"took {_clock(result.seconds)}, {result.steps} steps")
        how = "stopped early; " if result.stopped else ""
        self.tabs.setCurrentIndex(VERSIONS_TAB)
        show_info(f"Saved v{version.version} ({how}{result.steps} steps): {version.path}")

    # ------------------------------------------------------------------ versions

    def load_project(self) -> Job | None:
        """List the project folder that was just picked or typed.

        Versions whose headers were never read are read in a worker first (about 1 ms
        each, far more on a network drive: hundreds of versions would stall the window);
        meanwhile the corrections are listed and the version table is empty, and Train
        waits. A later pick cancels the read. Returns that job, or None when the listing
        was done at once.
        """
        self._cancel_read()
        folder = self._folder_or_none()
        if folder is None or finetune_adapters.versions_read(folder):
            self.refresh_project()
            return None

        def listed(outcome: Outcome) -> None:
            if self._read_job is not job:  # cancelled, or replaced by a later pick
                return
            self._read_job = None
            if self._folder_or_none() != folder:  # being edited: its own pick will list it
                return
            if outcome.ok:
                self._show_project(folder, outcome.value, None)
            else:  # unreadable files are skipped, so this is rare: list in place
                self.refresh_project()

        job = self._read_job = read_project_job(folder, on_done=listed)
        self._show_project(folder, [], None)
        return job.start()

    def _cancel_read(self) -> None:
        if self._read_job is not None:
            self._read_job.cancel()
            self._read_job = None

    def _folder_or_none(self) -> Path | None:
        try:
            return self.pairs.folder()
        except adapters.UserError:  # no project yet
            return None

    def refresh_project(self, select: int | None = None) -> None:
        """Re-read the project folder: corrections, versions (table, model lists); while
        :meth:`load_project` reads the versions, only the corrections."""
        folder = self._folder_or_none()
        reading = self._read_job is not None
        versions = finetune_adapters.list_versions(folder) if folder and not reading else []
        self._show_project(folder, versions, select)

    def _show_project(
        self, folder: Path | None, versions: list[finetune_adapters.Version], select: int | None
    ) -> None:
        """Show ``folder``'s corrections and ``versions`` (table, model lists)."""
        ids = finetune_adapters.correction_ids(folder) if folder else []
        self.options.set_correction_ids(ids)
        status = (
            f"{len(ids)} correction(s) saved in this project" if ids else "no corrections saved yet"
        )
        if self._read_job is not None:
            status += "; reading its model versions…"
        self.pairs.status.setText(status)
        self.versions = versions
        self.options.refresh_models(self.versions)
        segment = find_segment_widget(self.viewer)
        if segment is not None:
            self._list_versions_in(segment)
        self._fill_table(select)

    def _list_versions_in(self, segment: SegmentWidget) -> None:
        """Add every version of the project to the Segment widget's model list."""
        for version in self.versions:
            segment.add_model_path(version.path, _label(version), select=False)

    def _fill_table(self, select: int | None) -> None:
        self.table.setRowCount(0)
        for row, version in enumerate(self.versions):
            self.table.insertRow(row)
            tip = [str(version.path), *finetune_adapters.version_choices(version)]
            for column, text in enumerate(finetune_adapters.version_row(version).values()):
                item = QTableWidgetItem(text)
                item.setToolTip("\n".join(tip) if column == 0 else text)
                self.table.setItem(row, column, item)
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        rows = [i for i, v in enumerate(self.versions) if v.version == select]
        if rows:
            self.table.selectRow(rows[0])
        self._on_version_selected()

    def selected_version(self) -> finetune_adapters.Version | None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        return self.versions[min(rows)] if rows else None

    def select_version(self, number: int) -> None:
        """Select version ``number`` in the table."""
        for row, version in enumerate(self.versions):
            if version.version == number:
                self.table.selectRow(row)

    def _on_version_selected(self) -> None:
        version = self.selected_version()
        for button in (self.use_button, self.resegment_button):
            button.setEnabled(version is not None)
        if version is not None and not self.running:
            meta = version.metadata
            classes = meta.get("target") == "classes"
            try:
                self.plot.set_history(meta.get("history", []), meta.get("validation", []), classes)
            except finetune_adapters.UNREADABLE_RECORD:  # another segloop's record
                self.plot.set_history([], [], classes)

    def segment_widget(self) -> SegmentWidget:
        """The Segment widget of this viewer (docked now if it is not open)."""
        segment = find_segment_widget(self.viewer)
        if segment is None:
            _, segment = self.viewer.window.add_plugin_dock_widget(PLUGIN, "Segment")
        return segment

    def use_in_segment(self) -> SegmentWidget | None:
        """Make the selected version the Segment widget's model (adds it to its list)."""
        version = self.selected_version()
        if version is None:
            show_error("Select a version in the table first.")
            return None
        segment = self.segment_widget()
        self._list_versions_in(segment)
        segment.add_model_path(version.path, _label(version), select=True)
        self.options.refresh_models(self.versions)
        return segment

    def resegment_now(self) -> None:
        """Use the selected version in Segment and run it on Segment's current image."""
        segment = self.use_in_segment()
        if segment is None:
            return
        if segment.running:
            show_warning("The Segment widget is busy; wait for it or press its Cancel.")
            return
        segment.run()


def _report_saved(folder, saved: list[str], kept: list[str]) -> None:
    """Notify which corrections were stored and which saved ones were kept."""
    if saved:
        show_info(f"Saved {len(saved)} correction(s) in {folder}: {', '.join(saved)}")
    if kept:
        show_info(
            f"Kept the saved correction(s) {', '.join(kept)}: the layer only holds a "
            "model's unedited output, which never replaces your corrections."
        )


def _label(version: finetune_adapters.Version) -> str:
    return f"{version.path.parent.parent.name} v{version.version}"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def _table(headers: list[str]) -> QTableWidget:
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    for column, header in enumerate(headers):
        table.horizontalHeaderItem(column).setToolTip(COLUMNS[header])
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    table.setMinimumHeight(110)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideNone)
    return table
