"""The two tabs of the Fine-tune dock: training pairs / project, and training options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Image, Labels
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QWidget,
)

from . import adapters, finetune_adapters, train_adapters
from ._common import LayerCombo, same_layer

if TYPE_CHECKING:
    import napari

MODES = {"dense": "dense (0 = background)", "sparse": "sparse (0 = unlabelled, ignored)"}
STARTS = {"model": "current model", "scratch": "from scratch"}
SEGMENT_MODEL = "@segment"
SEGMENT_TEXT = "model of the Segment widget"
LOAD_TEXT = "Load model file…"
AUTO_TEXT = "auto: the shipped model that does best on the corrections"


class PairsPanel(QWidget):
    """Training pairs picked from the viewer, frames, annotation mode and project folder."""

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.pairs: list[tuple[Image, Labels]] = []
        self.image_combo = LayerCombo(viewer, Image)
        self.labels_combo = LayerCombo(viewer, Labels)
        self.add_button = QPushButton("Add pair")
        self.remove_button = QPushButton("Remove")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(72)
        self.frames_edit = QLineEdit("current")
        self.frames_edit.setToolTip(
            "For 2-D + t stacks: 'current' (the frame shown), 'all', or frame numbers like "
            "3,5,9 or 2-6. Only frames whose labels are not empty are used."
        )
        self.mode_combo = QComboBox()
        for key, text in MODES.items():
            self.mode_combo.addItem(text, key)
        self.mode_combo.setToolTip(
            "dense: every pixel is labelled, 0 is background. sparse: only painted pixels "
            "count (strokes), 0 is ignored by the loss."
        )
        self.folder_edit = QLineEdit()
        self.folder_edit.setToolTip("Folder of the project: corrections/ and models/v<N>")
        self.folder_button = QPushButton("…")
        self.folder_button.setMaximumWidth(32)
        self.save_button = QPushButton("Save corrections")
        self.status = QLabel("no corrections saved yet")
        self.status.setWordWrap(True)
        self._folder_edited = False
        self._layout()
        self.add_button.clicked.connect(self.add_current_pair)
        self.remove_button.clicked.connect(self.remove_selected)
        self.folder_button.clicked.connect(self.browse_folder)
        self.folder_edit.textEdited.connect(self._on_folder_typed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        viewer.layers.events.inserted.connect(self._update_default_folder)
        self._update_default_folder()

    def _layout(self) -> None:
        form = QFormLayout(self)
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        form.addRow("", buttons)
        form.addRow("pairs", self.pair_list)
        form.addRow("frames", self.frames_edit)
        form.addRow("annotation", self.mode_combo)
        folder = QHBoxLayout()
        folder.addWidget(self.folder_edit)
        folder.addWidget(self.folder_button)
        form.addRow("project", folder)
        form.addRow("", self.save_button)
        form.addRow("", self.status)

    # ------------------------------------------------------------------ pairs

    def add_pair(self, image: Image, labels: Labels) -> None:
        """Add ``(image, labels)`` to the list (once); the shapes must agree."""
        finetune_adapters.check_pair_shapes(image, labels)
        if any(same_layer(i, image) and same_layer(lab, labels) for i, lab in self.pairs):
            return
        self.pairs.append((image, labels))
        self._refresh_list()
        self._update_default_folder()

    def add_current_pair(self) -> None:
        """Add the pair picked in the two combo boxes (errors are notifications)."""
        from ._notify import show_error

        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        if image is None or labels is None:
            show_error("Pick an Image layer and a Labels layer, then press 'Add pair'.")
            return
        try:
            self.add_pair(image, labels)
        except adapters.UserError as exc:
            show_error(str(exc))

    def remove_selected(self) -> None:
        rows = sorted({index.row() for index in self.pair_list.selectedIndexes()}, reverse=True)
        for row in rows or ([len(self.pairs) - 1] if self.pairs else []):
            del self.pairs[row]
        self._refresh_list()

    def _on_layer_removed(self, event) -> None:
        gone = event.value
        self.pairs = [
            pair for pair in self.pairs if not any(same_layer(layer, gone) for layer in pair)
        ]
        self._refresh_list()

    def _refresh_list(self) -> None:
        self.pair_list.clear()
        for image, labels in self.pairs:
            self.pair_list.addItem(f"{image.name}  ⟷  {labels.name}")

    # ------------------------------------------------------------------ project folder

    def folder(self) -> Path:
        """The project folder typed or picked.

        Raises
        ------
        adapters.UserError
            When the field is empty (an empty path would mean napari's working folder).
        """
        text = self.folder_edit.text().strip()
        if not text:
            raise adapters.UserError("No project folder: type one or pick it with '…'.")
        return Path(text).expanduser()

    def set_folder(self, folder: str | Path) -> None:
        """Use ``folder`` as the project (stops following the first image's name)."""
        self._folder_edited = True
        self.folder_edit.setText(str(folder))
        self.folder_edit.editingFinished.emit()

    def browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Project folder", str(Path(self.folder_edit.text().strip()).expanduser())
        )
        if folder:
            self.set_folder(folder)

    def _on_folder_typed(self, _text: str) -> None:
        self._folder_edited = True

    def _update_default_folder(self, *_args) -> None:
        if self._folder_edited:
            return
        first = self.pairs[0][0] if self.pairs else (self.image_combo.layers() or [None])[-1]
        folder = finetune_adapters.default_project_folder(first.name if first else None)
        if str(folder) != self.folder_edit.text():
            self.folder_edit.setText(str(folder))
            self.folder_edit.editingFinished.emit()

    def sparse(self) -> bool:
        return self.mode_combo.currentData() == "sparse"


class OptionsPanel(QWidget):
    """Start model (or from scratch), budget, learning rate, losses, validation ids."""

    def __init__(self, viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.start_combo = _combo(STARTS)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.model_combo.setMinimumContentsLength(12)
        self.arch_combo = _combo({a: a for a in train_adapters.ARCHITECTURES})
        self.target_combo = _combo(
            {"instances": "instances (objects)", "classes": "classes (class ids, 0 = void)"}
        )
        self.names_edit = QLineEdit()
        self.names_edit.setPlaceholderText("e.g. nucleus, cytoplasm (ids 1, 2); empty: class 1, …")
        self.names_edit.setToolTip(
            "Names of the class ids 1, 2, … you painted, comma-separated. They and the "
            "colours of the first pair's Labels layer are stored in the model and shown "
            "on its class map."
        )
        self.budget_combo = _combo({"minutes": "minutes", "epochs": "epochs"})
        self.budget_spin = _double(0.1, 10_000, train_adapters.DEFAULTS.minutes, 0.5, 1)
        self.lr_spin = _double(1e-6, 1.0, train_adapters.DEFAULTS.learning_rate, 1e-4, 5)
        self.augment_check = QCheckBox("on")
        self.augment_check.setToolTip(
            "Random flips, rotations, elastic deformation, intensity and noise"
        )
        self.augment_check.setChecked(True)
        self.weight_check = QCheckBox("U-Net weight map")
        self.weight_check.setChecked(True)
        self.w0_spin = _double(0.0, 100.0, 10.0, 1.0, 1)
        self.sigma_spin = _double(0.5, 100.0, 5.0, 0.5, 1)
        self.crop_spin = _int_spin(32, 1024, train_adapters.DEFAULTS.crop, 32)
        self.batch_spin = _int_spin(1, 64, train_adapters.DEFAULTS.batch_size, 1)
        self.val_list = QListWidget()
        self.val_list.setMaximumHeight(64)
        self.val_list.setToolTip(
            "Corrections held out to validate (and to score versions). None checked: all "
            "are trained on, and post-processing is checked on them."
        )
        self._previous_model = 0
        self._layout()
        self.refresh_models()
        self.start_combo.currentIndexChanged.connect(self._on_start_changed)
        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        self.budget_combo.currentIndexChanged.connect(self._on_budget_changed)
        self.weight_check.toggled.connect(self._on_weight_toggled)
        self.model_combo.activated.connect(self._on_model_activated)
        self._on_start_changed()

    def _layout(self) -> None:
        form = QFormLayout(self)
        form.addRow("start from", self.start_combo)
        form.addRow("model", self.model_combo)
        form.addRow("architecture", self.arch_combo)
        form.addRow("target", self.target_combo)
        form.addRow("class names", self.names_edit)
        budget = QHBoxLayout()
        budget.addWidget(self.budget_spin)
        budget.addWidget(self.budget_combo)
        form.addRow("train for", budget)
        form.addRow("learning rate", self.lr_spin)
        form.addRow("augmentation", self.augment_check)
        form.addRow("loss", self.weight_check)
        weights = QHBoxLayout()  # a row of its own: beside the check box it was 520 px wide
        weights.addWidget(QLabel("w0"))
        weights.addWidget(self.w0_spin)
        weights.addWidget(QLabel("σ"))
        weights.addWidget(self.sigma_spin)
        form.addRow("", weights)
        sizes = QHBoxLayout()
        sizes.addWidget(self.crop_spin)
        sizes.addWidget(QLabel("batch"))
        sizes.addWidget(self.batch_spin)
        form.addRow("crop (px)", sizes)
        form.addRow("validation", self.val_list)
        self._form = form

    # ------------------------------------------------------------------ models

    def refresh_models(self, versions: list | None = None) -> None:
        """Rebuild the model list: Segment's model, shipped models, project versions, files."""
        from ._segment_widget import find_segment_widget

        current = self.model_combo.currentData()
        files = [
            self.model_combo.itemData(i)
            for i in range(self.model_combo.count())
            if str(self.model_combo.itemData(i) or "").endswith(".safetensors")
        ]
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        segment = find_segment_widget(self.viewer)
        if segment is not None:
            name = segment.model_combo.currentText()
            self.model_combo.addItem(f"{SEGMENT_TEXT} ({name})", SEGMENT_MODEL)
        for name in adapters.shipped_model_names():
            self.model_combo.addItem(name, name)
        self.model_combo.addItem(AUTO_TEXT, train_adapters.AUTO_START)
        self.model_combo.setItemData(
            self.model_combo.count() - 1,
            "Before training, every shipped model segments the saved corrections (at their "
            "object size); the one with the best SEG is the start. Adds a few seconds per "
            "model.",
            Qt.ItemDataRole.ToolTipRole,
        )
        for version in versions or []:
            self._add_file(version.path, f"{version.path.parent.parent.name} v{version.version}")
        for path in files:
            self._add_file(path)
        self.model_combo.addItem(LOAD_TEXT, "")
        index = self.model_combo.findData(current) if current is not None else -1
        self.model_combo.setCurrentIndex(index if index >= 0 else 0)
        self._previous_model = self.model_combo.currentIndex()
        self.model_combo.blockSignals(False)

    def _add_file(self, path: str | Path, label: str | None = None) -> int:
        path = str(Path(path).expanduser().resolve())
        index = self.model_combo.findData(path)
        if index < 0:
            self.model_combo.addItem(label or Path(path).name, path)
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        return index

    def add_model_file(self, path: str | Path) -> None:
        """Add a model file before "Load model file…" and pick it."""
        load = self.model_combo.findText(LOAD_TEXT)
        if load >= 0:
            self.model_combo.removeItem(load)
        index = self._add_file(path)
        self.model_combo.addItem(LOAD_TEXT, "")
        self.model_combo.setCurrentIndex(index)
        self._previous_model = index

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != LOAD_TEXT:
            self._previous_model = index
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Start from model", "", "segloop models (*.safetensors);;All files (*)"
        )
        if path:
            self.add_model_file(path)
        else:
            self.model_combo.setCurrentIndex(self._previous_model)

    def model_ref(self) -> str:
        """Model to fine-tune: the Segment widget's, a shipped name or a file ("" if none)."""
        from ._segment_widget import find_segment_widget

        data = str(self.model_combo.currentData() or "")
        if data != SEGMENT_MODEL:
            return data
        segment = find_segment_widget(self.viewer)
        if segment is None:
            raise adapters.UserError(
                "The Segment widget is closed: pick the model to start from in 'model'."
            )
        return segment.model_ref()

    # ------------------------------------------------------------------ options

    def _on_start_changed(self, *_args) -> None:
        start = self.start_combo.currentData()
        scratch = start == "scratch"
        for widget, visible in (
            (self.model_combo, not scratch),
            (self.arch_combo, scratch),
            (self.target_combo, scratch),
        ):
            widget.setEnabled(visible)
            self._form.setRowVisible(widget, visible)
        self.lr_spin.setValue(
            train_adapters.DEFAULTS.learning_rate_scratch
            if start == "scratch"
            else train_adapters.DEFAULTS.learning_rate
        )
        self._on_target_changed()

    def _on_target_changed(self, *_args) -> None:
        """The weight map only applies to instance targets."""
        classes = self.is_class_model()
        self.names_edit.setEnabled(classes)
        self._form.setRowVisible(self.names_edit, classes)
        self.weight_check.setEnabled(not classes)
        self._on_weight_toggled(self.weight_check.isChecked() and not classes)

    def is_class_model(self) -> bool:
        """A new model with target "classes" is being set up."""
        scratch = self.start_combo.currentData() == "scratch"
        return scratch and self.target_combo.currentData() == "classes"

    def _on_budget_changed(self, *_args) -> None:
        minutes = self.budget_combo.currentData() == "minutes"
        self.budget_spin.setDecimals(1 if minutes else 0)
        self.budget_spin.setValue(train_adapters.DEFAULTS.minutes if minutes else 20)

    def _on_weight_toggled(self, on: bool) -> None:
        self.w0_spin.setEnabled(on)
        self.sigma_spin.setEnabled(on)

    def set_correction_ids(self, ids: list[str]) -> None:
        """List the project's corrections as checkable validation choices (keeps checks)."""
        checked = set(self.val_ids() or [])
        self.val_list.clear()
        for ident in ids:
            item = QListWidgetItem(ident)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(
                Qt.CheckState.Checked if ident in checked else Qt.CheckState.Unchecked
            )
            self.val_list.addItem(item)

    def val_ids(self) -> list[str] | None:
        """Checked validation ids, or None for "auto"."""
        ids = [
            self.val_list.item(i).text()
            for i in range(self.val_list.count())
            if self.val_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        return ids or None

    def request(self, folder: Path) -> train_adapters.TrainRequest:
        """The training request of the current choices (GUI thread)."""
        scratch = self.start_combo.currentData() == "scratch"
        minutes = self.budget_combo.currentData() == "minutes"
        return train_adapters.TrainRequest(
            folder=folder,
            start="scratch" if scratch else "model",
            model="" if scratch else self.model_ref(),
            arch=self.arch_combo.currentData(),
            target=self.target_combo.currentData() if scratch else "instances",
            minutes=self.budget_spin.value() if minutes else None,
            epochs=None if minutes else max(1, round(self.budget_spin.value())),
            learning_rate=self.lr_spin.value(),
            augment=self.augment_check.isChecked(),
            weight_map=self.weight_check.isChecked(),
            w0=self.w0_spin.value(),
            sigma=self.sigma_spin.value(),
            val_ids=self.val_ids(),
            crop=self.crop_spin.value(),
            batch_size=self.batch_spin.value(),
            class_names=self.class_names(),
        )

    def class_names(self) -> list[str] | None:
        """Names typed for a new class model (None: defaults or not a class model)."""
        if not self.is_class_model():
            return None
        return train_adapters.class_names_from_text(self.names_edit.text())


def _combo(items: dict[str, str]) -> QComboBox:
    combo = QComboBox()
    for key, text in items.items():
        combo.addItem(text, key)
    return combo


def _double(low: float, high: float, value: float, step: float, decimals: int) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


def _int_spin(low: int, high: int, value: int, step: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin
