"""Weight map dock widget: the U-Net border weight map of a Labels layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from napari.layers import Labels
from qtpy.QtWidgets import QDoubleSpinBox

from . import adapters
from ._common import JobWidget, LayerCombo
from .workers import Job, Outcome, weight_map_job

if TYPE_CHECKING:
    import napari

COLORMAP = "inferno"


class WeightMapWidget(JobWidget):
    """Compute ``w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` of instance labels.

    The result goes to the Image layer ``"<labels> weight map"``, updated on recompute.
    Stacks are processed frame by frame.
    """

    run_text = "Compute"
    job_name = "weight map"

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__(napari_viewer)
        self.labels_combo = LayerCombo(napari_viewer, Labels)
        self.w0_spin = _double(0.0, 100.0, 10.0, "Amplitude of the border term (w0)")
        self.sigma_spin = _double(0.5, 100.0, 5.0, "Width of the border term in pixels (σ)")
        self.form.addRow("labels", self.labels_combo)
        self.form.addRow("w0", self.w0_spin)
        self.form.addRow("σ (pixels)", self.sigma_spin)
        self._source: Labels | None = None

    def make_job(self, **callbacks) -> Job:
        layer = self.labels_combo.layer()
        labels = adapters.labels_data(layer, check_large=False)
        adapters.check_weight_parameters(self.w0_spin.value(), self.sigma_spin.value(), layer)
        self._source = layer
        return weight_map_job(
            labels, self.w0_spin.value(), self.sigma_spin.value(), layer.name, **callbacks
        )

    def job_done(self, outcome: Outcome) -> None:
        weights, top = outcome.value  # the maximum was taken in the worker
        self.show_layer(
            f"{self._source.name} weight map",
            weights,
            "image",
            like=self._source,
            colormap=COLORMAP,
            contrast_limits=(0.0, max(top, 1.0)),
        )


def _double(low: float, high: float, value: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(1)
    spin.setSingleStep(0.5)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
