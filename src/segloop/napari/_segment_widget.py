"""Segment dock widget: run a segloop model on an Image layer in a background thread."""

from __future__ import annotations

import functools
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QSpinBox,
    QWidget,
)

from . import adapters, edits, lazy_segment
from ._common import JobWidget, LayerCombo, writable_labels_name
from ._notify import show_info
from ._result_layers import (  # noqa: F401 - the styles are part of this module's API
    DISTANCE_STYLE,
    FOREGROUND_STYLE,
    LABELS_SUFFIXES,
    UNCERTAINTY_STYLE,
    LayerOutput,
)
from .layer_updates import holds_stack
from .legend import apply_legend
from .workers import Job, Outcome, segment_job

if TYPE_CHECKING:
    import napari

LOAD_TEXT = "Load model file…"
SCOPES = ("current frame", "whole stack")
#: Object-size choices: label shown -> SegmentOptions.diameter (SIZE_TYPED reads the spin).
SIZE_MODES = {"model default": None, "measure (auto)": "auto", "native scale": "native"}
SIZE_TYPED = "diameter (px)"
#: Test-time augmentation choices -> SegmentOptions.tta.
TTA_MODES = {"model default": None, "on (8x slower)": True, "off": False}
#: How an RGB image becomes grey -> SegmentOptions.colour.
COLOUR_CHOICES = {"model default": None, "luma": "luma", "hematoxylin (H&E)": "hematoxylin"}
#: Key of ``layer.metadata`` naming the model (name or path) that produced a result layer.
MODEL_KEY = "segloop_model"
PROVENANCE_KEY = adapters.PROVENANCE_KEY

_WIDGETS: weakref.WeakSet[SegmentWidget] = weakref.WeakSet()


def find_segment_widget(viewer: napari.Viewer) -> SegmentWidget | None:
    """The open Segment widget of ``viewer`` (the most recently created one), or None."""
    found = None
    for widget in list(_WIDGETS):
        try:
            alive = widget.parent() is not None and widget.viewer == viewer
        except RuntimeError:  # its Qt object was deleted
            continue
        if alive and (found is None or widget.serial > found.serial):
            found = widget
    return found


class SegmentWidget(JobWidget):
    """Pick an image, a model and a device; Run adds/updates the result layers.

    Results go to ``"<image> classes"`` (Labels, argmax class, coloured and named by the
    model's class legend), ``"<image> foreground"`` (Image, foreground probability 0..1),
    for models with a distance head ``"<image> distance"`` (Image, hidden: the predicted
    distance to the object edge whose peaks seeded the objects) and ``"<image> instances"``
    (Labels). Re-running updates these layers instead of adding new ones.

    The layers' data is prepared in the worker thread; they are added (or updated) one per
    turn of the event loop, so the window keeps responding. The run counts as
    :attr:`running` until the last one is in place.
    """

    run_text = "Run"
    job_name = "segmentation"
    _count = 0

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer)
        SegmentWidget._count += 1
        self.serial = SegmentWidget._count
        _WIDGETS.add(self)
        #: Folder of the Zarr results of chunked runs (None: ~/segloop-results).
        self.results_folder: Path | None = None
        self.image_combo = LayerCombo(napari_viewer, Image)
        self.model_combo = QComboBox()
        self.device_combo = QComboBox()
        self.device_combo.addItems(adapters.DEVICE_CHOICES)
        self.device_label = QLabel("not run yet")
        self.device_label.setToolTip(
            "Device, precision and object diameter (pixels, in this image) used by the last "
            "run; with a diameter set or 'auto' the image was rescaled to the model's size"
        )
        self.tile_spin = _spin(0, 2048, 0, step=64, special="model default")
        self.tile_spin.setToolTip("Side of the square tiles the network sees (pixels)")
        self.size_combo = QComboBox()
        self.size_combo.addItems([*SIZE_MODES, SIZE_TYPED])
        self.size_combo.setToolTip(
            "How big the objects in this image are. The image is rescaled so that objects "
            "match the model's training size: 'measure (auto)' finds the size with a first "
            "pass, 'native scale' never rescales, 'diameter (px)' uses the number typed. "
            "'model default' = what was best on the model's validation images "
            "(`segloop info` shows it)."
        )
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(1.0, 1000.0)
        self.diameter_spin.setDecimals(1)
        self.diameter_spin.setValue(30.0)
        self.diameter_spin.setSuffix(" px")
        self.diameter_spin.setToolTip("Typical object diameter in this image (pixels)")
        self.size_combo.currentTextChanged.connect(self._update_size)
        self._update_size()
        size_row = QWidget()
        size_layout = QHBoxLayout(size_row)
        size_layout.setContentsMargins(0, 0, 0, 0)
        size_layout.addWidget(self.size_combo, 2)
        size_layout.addWidget(self.diameter_spin, 1)
        self.tta_combo = QComboBox()
        self.tta_combo.addItems(list(TTA_MODES))
        self.tta_combo.setToolTip(
            "Test-time augmentation: average the predictions of the 8 flips/rotations of "
            "the image (8x the network time). On the nuclei validation images it changed "
            "F1 by less than 0.01; try it where the model hesitates."
        )
        self.colour_combo = QComboBox()
        self.colour_combo.addItems(list(COLOUR_CHOICES))
        self.colour_combo.setToolTip(
            "Colour images only: how RGB becomes the one grey channel the network sees. "
            "luma: brightness (what the shipped models were trained with). hematoxylin: "
            "the nuclear stain of H&E by colour deconvolution, nuclei bright. model "
            "default: the model's choice (a version fine-tuned on colour corrections "
            "chose one of the two on them)."
        )
        self.min_size_spin = _spin(-1, 100_000, -1, special="model default")
        self.min_size_spin.setToolTip("Objects with fewer pixels are removed")
        self.scope_combo = QComboBox()
        self.scope_combo.addItems(SCOPES)
        self.scope_combo.setToolTip("For 2-D + t stacks: segment the frame shown or all frames")
        self.unknown_spin = QDoubleSpinBox()
        self.unknown_spin.setRange(0.0, 1.0)
        self.unknown_spin.setSingleStep(0.05)
        self.unknown_spin.setDecimals(2)
        self.unknown_spin.setSpecialValueText("off")
        self.unknown_spin.setToolTip(
            "Class models: pixels whose most likely class has a probability below this "
            "are left 0 = unknown instead of being forced into a class. 'off' = always "
            "pick the most likely class."
        )
        self.uncertainty_check = QCheckBox("show where the model is unsure")
        self.uncertainty_check.setToolTip(
            "Add the layer '<image> uncertainty' (normalised entropy of the class "
            "probabilities, 0 = certain, 1 = undecided): the bright places are the ones "
            "to check and correct first."
        )
        self.form.addRow("image", self.image_combo)
        self.form.addRow("model", self.model_combo)
        self.form.addRow("device", self.device_combo)
        self.form.addRow("used", self.device_label)
        self.form.addRow("tile size", self.tile_spin)
        self.form.addRow("object size", size_row)
        self.form.addRow("flip averaging", self.tta_combo)
        self.form.addRow("colour → grey", self.colour_combo)
        self.form.addRow("min object size", self.min_size_spin)
        self.form.addRow("unknown below", self.unknown_spin)
        self.form.addRow("stack scope", self.scope_combo)
        self.form.addRow("uncertainty", self.uncertainty_check)
        self._previous_model = 0
        self._fill_models()
        self.model_combo.activated.connect(self._on_model_activated)
        self.image_combo.currentIndexChanged.connect(self._update_scope)
        self._update_scope()
        self._target: tuple[Image, int | None, str] | None = None

    # ------------------------------------------------------------------ models

    def _fill_models(self) -> None:
        for name in adapters.shipped_model_names():
            self.model_combo.addItem(name, name)
        self.model_combo.addItem(LOAD_TEXT, "")
        self.model_combo.setCurrentIndex(0)

    def add_model_file(self, path: str | Path) -> None:
        """Add a model file to the picker (once) and select it."""
        self.add_model_path(path)

    def add_model_path(
        self, path: str | Path, label: str | None = None, select: bool = True
    ) -> int:
        """Add a model file to the picker once (shown as ``label``, default the file name).

        Parameters
        ----------
        path : str or Path
            Model file (e.g. a version of a fine-tuning project).
        label : str, optional
            Text shown in the picker; the full path is the tooltip.
        select : bool
            Make it the current model.

        Returns
        -------
        int
            Index of the entry.
        """
        path = str(Path(path).expanduser().resolve())
        index = self.model_combo.findData(path)
        if index < 0:
            index = self.model_combo.count() - 1  # keep "Load model file…" last
            self.model_combo.insertItem(index, label or Path(path).name, path)
            self.model_combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)
        elif label:
            self.model_combo.setItemText(index, label)
        if select:
            self.model_combo.setCurrentIndex(index)
            self._previous_model = index
        return index

    def model_ref(self) -> str:
        """Name of the shipped model or path of the model file picked ("" if none)."""
        return str(self.model_combo.currentData() or "")

    def _on_model_activated(self, index: int) -> None:
        if self.model_combo.itemText(index) != LOAD_TEXT:
            self._previous_model = index
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Load segloop model", "", "segloop models (*.safetensors);;All files (*)"
        )
        if path:
            self.add_model_file(path)
        else:
            self.model_combo.setCurrentIndex(self._previous_model)

    # ------------------------------------------------------------------ run

    def _update_size(self, *_args) -> None:
        self.diameter_spin.setEnabled(self.size_combo.currentText() == SIZE_TYPED)

    def diameter_choice(self) -> float | str | None:
        """SegmentOptions.diameter for the current object-size choice."""
        mode = self.size_combo.currentText()
        return self.diameter_spin.value() if mode == SIZE_TYPED else SIZE_MODES[mode]

    def _update_scope(self, *_args) -> None:
        self.scope_combo.setEnabled(adapters.is_stack(self.image_combo.layer()))

    def make_job(self, **callbacks) -> Job:
        layer = self.image_combo.layer()
        if lazy_segment.needs_chunks(layer):
            return self._lazy_job(layer, **callbacks)
        frame = None
        if adapters.is_stack(layer) and self.scope_combo.currentText() == SCOPES[0]:
            frame = adapters.current_frame(self.viewer, layer)
        data = adapters.image_data(layer, frame, check_large=False)
        if not self.model_ref():
            raise adapters.UserError(
                "No model picked: choose a shipped model or 'Load model file…'."
            )
        request = adapters.SegmentRequest(
            model=self.model_ref(),
            image=data,
            device=self.device_combo.currentText(),
            tile=self._tile(),
            min_size=None if self.min_size_spin.value() < 0 else self.min_size_spin.value(),
            diameter=self.diameter_choice(),
            tta=TTA_MODES[self.tta_combo.currentText()],
            colour=COLOUR_CHOICES[self.colour_combo.currentText()],
            uncertainty=self.uncertainty_check.isChecked(),
            unknown_threshold=self.unknown_spin.value(),
            name=layer.name,
        )
        # which labels layers the result may replace: checked in the worker
        self.close_edit_checks()
        shape = adapters.spatial_shape(layer.data, layer.rgb)
        self.edit_checks = [
            check
            for suffix in LABELS_SUFFIXES
            for check in edits.edit_checks(self.viewer, f"{layer.name} {suffix}")
        ]
        request.edit_checks = [(check, shape, frame) for check in self.edit_checks]
        self._target = (layer, frame, self.model_ref())
        self._settings = {
            key: getattr(request, key)
            for key in (
                "device",
                "tile",
                "min_size",
                "diameter",
                "tta",
                "colour",
                "unknown_threshold",
            )
        }
        return segment_job(request, **callbacks)

    def _lazy_job(self, layer: Image, **callbacks) -> Job:
        """A multiscale, dask/zarr or very large layer: chunk by chunk into a Zarr."""
        if not self.model_ref():
            raise adapters.UserError(
                "No model picked: choose a shipped model or 'Load model file…'."
            )
        try:
            lazy = lazy_segment.lazy_image_of(layer)
        except ImportError as exc:
            raise adapters.UserError(f"Large images need zarr: {exc}") from None
        options = {  # SegmentOptions fields, built in the worker (it imports torch)
            "tile": self._tile(),
            "device": self.device_combo.currentText(),
            "diameter": self.diameter_choice(),
            "min_size": None if self.min_size_spin.value() < 0 else self.min_size_spin.value(),
            "tta": TTA_MODES[self.tta_combo.currentText()],
            "colour": COLOUR_CHOICES[self.colour_combo.currentText()],
        }
        target = lazy_segment.results_path(layer.name, self.results_folder)
        self._target = (layer, None, self.model_ref())
        return Job(
            lazy_segment.lazy_segment_run, self.model_ref(), lazy, options, target, **callbacks
        )

    def _show_lazy(self, result: lazy_segment.LazyOutput) -> None:
        """Add the stitched labels as a new lazy Labels layer (never replacing one)."""
        layer, _, model = self._target
        name = f"{layer.name} instances"
        existing = {other.name for other in self.viewer.layers}
        index = 1
        while name in existing:
            name = f"{layer.name} instances [{index}]"
            index += 1
        out = self.show_layer(  # a free name: always a new layer
            name, lazy_segment.open_result(result.path), "labels", like=layer, lazy_overlays=True
        )
        out.metadata[MODEL_KEY] = model
        out.metadata["segloop_zarr"] = str(result.path)
        objects = sum(s["objects"] for s in result.summaries)
        self.device_label.setText(f"chunked: {len(result.summaries)} frame(s), {objects} objects")
        show_info(
            f"{objects} objects; labels saved in {result.path} (your edits are saved there too)"
        )

    def job_done(self, outcome: Outcome) -> None:
        if isinstance(outcome.value, lazy_segment.LazyOutput):
            self._show_lazy(outcome.value)
            return
        result: adapters.SegmentOutput = outcome.value
        seg = result.segmentation
        layer, frame, model = self._target
        self.device_label.setText(
            f"{seg.device}; {_diameter_text(seg.diameters, seg.scale_factors)}"
        )
        steps = [
            functools.partial(self._show_output, output, result, layer, frame, model)
            for output in result.layers
        ]
        self._set_running(True)
        self.cancel_button.setEnabled(False)  # the result is computed; it is being shown
        self.progress.setFormat("adding the result layers…")
        self.stager.run([*steps, self._layers_done])

    def _show_output(
        self,
        output: LayerOutput,
        result: adapters.SegmentOutput,
        layer: Image,
        frame: int | None,
        model: str,
    ) -> None:
        """Add or update one result layer (one event-loop turn)."""
        suffix, kind, data, style = output.suffix, output.kind, output.data, output.style
        name = f"{layer.name} {suffix}"
        shape = data.shape if frame is None else (layer.data.shape[0], *data.shape)
        if kind == "labels":
            name = writable_labels_name(self.viewer, name, shape, frame, self.edit_checks)
        # the other frames' records hold only when this frame goes into their stack
        same_stack = frame is not None and holds_stack(self.viewer, name, kind, shape)
        if frame is not None:
            data = adapters.frame_into(self.viewer, name, kind, data, frame, shape)
        # a new Labels layer's painting overlays are built when a paint tool needs them
        out = self.show_layer(
            name, data, kind, like=layer, select=output.select, lazy_overlays=True, **style
        )
        if kind == "labels":
            out.metadata[MODEL_KEY] = model
            out.metadata[PROVENANCE_KEY] = self._provenance(result, layer, frame, model)
            written = result.digests.get(suffix, {})
            if frame is not None:
                written = {frame: written[edits.WHOLE]} if edits.WHOLE in written else {}
            edits.record_written(out, written, replace=not same_stack)
        if suffix == "classes" and result.legend:
            apply_legend(out, result.legend)

    def _provenance(
        self, result: adapters.SegmentOutput, layer: Image, frame: int | None, model: str
    ) -> dict:
        """How this result was made (stored in the labels layer's metadata)."""
        return adapters.segment_provenance(
            result, model, getattr(self, "_settings", {}), layer, frame
        )

    def _layers_done(self) -> None:
        self.close_edit_checks()
        self._set_running(False)
        self.progress.setFormat("done")

    def _tile(self) -> int | None:
        """The tile side asked for (None: the model's default); 1-15 px is refused."""
        tile = self.tile_spin.value() or None
        if tile is not None and tile < 16:
            raise adapters.UserError(
                f"Tile size {tile} px is too small: use at least 16 px, or 0 for the model default."
            )
        return tile


def _diameter_text(diameters: list, factors: list[float] | None = None) -> str:
    """'object diameter 18 px' (median over frames) or 'native scale'.

    A frame run without rescaling (factor 1) is at native scale, whatever diameter the
    model stores.
    """
    factors = factors or [None] * len(diameters)
    rescaled = [d for d, f in zip(diameters, factors, strict=True) if f != 1.0]
    used = [d for d in rescaled if d]
    if not used:
        return "native scale"
    return f"object diameter {sorted(used)[len(used) // 2]:.0f} px"


def _spin(low: int, high: int, value: int, step: int = 1, special: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    if special:
        spin.setSpecialValueText(special)
    return spin
