"""Live training plot for the Fine-tune dock: loss per step and the validation metric.

Uses matplotlib's Qt canvas; without matplotlib the widget shows a one-line hint instead
(training works the same).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

#: Colours close to napari's dark theme, so the plot reads well in the dock.
BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
LOSS_COLOUR = "#4fc3f7"
METRIC_COLOUR = "#ffb74d"


class LossPlot(QWidget):
    """Training loss (left axis, per step) and validation metric (right axis, 0..1)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.canvas: Any = None
        self.loss_line: Any = None
        self.metric_line: Any = None
        self.metric_name = "F1"
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - matplotlib is a napari extra here
            layout.addWidget(QLabel("(install matplotlib to see the live training plot)"))
            return
        figure = Figure(figsize=(4.0, 2.2), dpi=100, facecolor=BACKGROUND, layout="tight")
        self.canvas = FigureCanvasQTAgg(figure)
        self.canvas.setMinimumHeight(170)
        layout.addWidget(self.canvas)
        self.loss_axes = figure.add_subplot(1, 1, 1)
        self.metric_axes = self.loss_axes.twinx()
        (self.loss_line,) = self.loss_axes.plot([], [], color=LOSS_COLOUR, lw=1.2, label="loss")
        (self.metric_line,) = self.metric_axes.plot(
            [], [], color=METRIC_COLOUR, marker="o", ms=4, lw=1.2, label="validation"
        )
        self._style()
        self.clear()

    def _style(self) -> None:
        for axes in (self.loss_axes, self.metric_axes):
            axes.set_facecolor(BACKGROUND)
            axes.tick_params(colors=FOREGROUND, labelsize=8)
            for spine in axes.spines.values():
                spine.set_color(FOREGROUND)
        self.loss_axes.set_xlabel("step", color=FOREGROUND, fontsize=8)
        self.loss_axes.set_ylabel("training loss", color=LOSS_COLOUR, fontsize=8)
        self.metric_axes.set_ylim(0.0, 1.0)

    def clear(self, metric_name: str = "F1") -> None:
        """Empty the curves (a new run starts)."""
        if self.canvas is None:
            return
        self.metric_name = metric_name
        self.loss_line.set_data([], [])
        self.metric_line.set_data([], [])
        self.metric_axes.set_ylabel(f"validation {metric_name}", color=METRIC_COLOUR, fontsize=8)
        self.loss_axes.set_xlim(0, 10)
        self.loss_axes.set_ylim(0, 1)
        self.canvas.draw_idle()

    def add_loss(self, step: float, loss: float) -> None:
        """Append one training step."""
        if self.canvas is None:
            return
        xs = [*self.loss_line.get_xdata(), step]
        ys = [*self.loss_line.get_ydata(), loss]
        self.loss_line.set_data(xs, ys)
        self._rescale()

    def add_metric(self, step: float, value: float, name: str | None = None) -> None:
        """Append one validation score (0..1)."""
        if self.canvas is None:
            return
        if name and name != self.metric_name:
            self.metric_name = name
            self.metric_axes.set_ylabel(f"validation {name}", color=METRIC_COLOUR, fontsize=8)
        xs = [*self.metric_line.get_xdata(), step]
        ys = [*self.metric_line.get_ydata(), value]
        self.metric_line.set_data(xs, ys)
        self._rescale()

    def set_history(
        self, history: list[dict[str, float]], validation: list[dict], classes: bool = False
    ) -> None:
        """Show a stored run (a saved version's thinned ``history`` and ``validation``).

        ``classes``: the run trained a class model (its metric is pixel accuracy).
        """
        key, name = ("accuracy", "accuracy") if classes else _metric_key(validation)
        self.clear(name)
        if self.canvas is None:
            return
        self.loss_line.set_data(
            [h["step"] for h in history if "loss" in h], [h["loss"] for h in history if "loss" in h]
        )
        points = [(v["step"], v[key]) for v in validation if key in v and "step" in v]
        self.metric_line.set_data([p[0] for p in points], [p[1] for p in points])
        self._rescale()

    def _rescale(self) -> None:
        xs = list(self.loss_line.get_xdata()) + list(self.metric_line.get_xdata())
        ys = list(self.loss_line.get_ydata())
        if xs:
            self.loss_axes.set_xlim(0, max(max(xs), 1) * 1.05)
        if ys:
            top = max(ys)
            self.loss_axes.set_ylim(0, top * 1.1 if top > 0 else 1.0)
        self.canvas.draw_idle()

    def n_points(self) -> tuple[int, int]:
        """Points plotted: (loss, validation)."""
        if self.canvas is None:
            return 0, 0
        return len(self.loss_line.get_xdata()), len(self.metric_line.get_xdata())


def _metric_key(validation: list[dict]) -> tuple[str, str]:
    """Metric stored in validation records and its display name."""
    if any("accuracy" in v for v in validation):
        return "accuracy", "accuracy"
    return "f1", "F1"


def validation_point(data: dict[str, Any]) -> tuple[float, str] | None:
    """(value, name) of the metric in a progress event's ``validation`` dict, if any."""
    metrics = data.get("validation") or {}
    for key, name in (("f1", "F1"), ("accuracy", "accuracy")):
        value = metrics.get(key)
        if value is not None:
            return float(value), name
    return None
