"""Live training plot for the Fine-tune dock: loss per step and the validation metric.

The picture is drawn by matplotlib's Agg renderer in a background thread and the widget
only paints the finished image. Drawing the figure costs 30-70 ms of CPU (several times
that in wall time while training keeps the cores busy), which in the GUI thread froze the
window at every step. New points are collected as they arrive and a new picture is asked
for at most every :data:`REDRAW_MS`; a picture always shows every point received up to
its request, and the last request of a run shows them all. Without matplotlib the widget
shows a one-line hint instead (training works the same).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import QRect, QTimer
from qtpy.QtGui import QColor, QImage, QPainter
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

log = logging.getLogger(__name__)

#: Colours close to napari's dark theme, so the plot reads well in the dock.
BACKGROUND = "#262930"
FOREGROUND = "#d1d2d4"
LOSS_COLOUR = "#4fc3f7"
METRIC_COLOUR = "#ffb74d"
#: New points are drawn at most this often (milliseconds).
REDRAW_MS = 500
#: How often the GUI thread looks for a finished picture while one is coming (ms).
POLL_MS = 40
#: Least height of the plot (px); it grows with the dock.
MIN_HEIGHT = 130
#: Smallest picture drawn (pixels), also for a widget not laid out yet.
MIN_SIZE = (240, 140)


@dataclass(frozen=True)
class Scene:
    """Everything one picture shows (an immutable snapshot handed to the render thread)."""

    width: int
    height: int
    ratio: float  # device pixels per widget pixel
    loss: tuple[tuple[float, ...], tuple[float, ...]]
    metric: tuple[tuple[float, ...], tuple[float, ...]]
    metric_name: str

    @property
    def limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(x, y) limits of the loss axes: every point, 5 % / 10 % margin."""
        right = max(max(self.loss[0] + self.metric[0], default=0.0), 1.0) * 1.05
        top = max(self.loss[1], default=0.0)
        return (0.0, float(right)), (0.0, float(top) * 1.1 if top > 0 else 1.0)


class LossPlot(QWidget):
    """Training loss (left axis, per step) and validation metric (right axis, 0..1)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.metric_name = "F1"
        self._loss: tuple[list[float], list[float]] = ([], [])
        self._metric: tuple[list[float], list[float]] = ([], [])
        self._image: QImage | None = None
        self._drawn: Scene | None = None
        self.pictures = 0  # pictures received from the render thread
        self.available = importlib.util.find_spec("matplotlib") is not None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        self._poll = QTimer(self)  # collects the render thread's pictures
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self._collect)
        if not self.available:  # pragma: no cover - matplotlib is a napari extra here
            layout = QVBoxLayout(self)
            layout.setContentsMargins(0, 0, 0, 0)
            layout.addWidget(QLabel("(install matplotlib to see the live training plot)"))
            return
        self.setMinimumHeight(MIN_HEIGHT)
        self._key = id(self)
        weakref.finalize(self, _RENDERER.forget, self._key)
        self.clear()

    # ------------------------------------------------------------------ data

    def clear(self, metric_name: str = "F1") -> None:
        """Empty the curves (a new run starts)."""
        self.metric_name = metric_name
        self._loss = ([], [])
        self._metric = ([], [])
        self.redraw()

    def add_loss(self, step: float, loss: float) -> None:
        """Append one training step (drawn within :data:`REDRAW_MS`)."""
        self._loss[0].append(float(step))
        self._loss[1].append(float(loss))
        self._schedule()

    def add_metric(self, step: float, value: float, name: str | None = None) -> None:
        """Append one validation score (0..1; drawn within :data:`REDRAW_MS`)."""
        if name:
            self.metric_name = name
        self._metric[0].append(float(step))
        self._metric[1].append(float(value))
        self._schedule()

    def set_history(
        self, history: list[dict[str, float]], validation: list[dict], classes: bool = False
    ) -> None:
        """Show a stored run (a saved version's thinned ``history`` and ``validation``).

        ``classes``: the run trained a class model (its metric is pixel accuracy).
        """
        key, name = ("accuracy", "accuracy") if classes else _metric_key(validation)
        self.metric_name = name
        steps = [h for h in history if "loss" in h]
        self._loss = ([float(h["step"]) for h in steps], [float(h["loss"]) for h in steps])
        points = [(v["step"], v[key]) for v in validation if key in v and "step" in v]
        self._metric = ([float(p[0]) for p in points], [float(p[1]) for p in points])
        self.redraw()

    def n_points(self) -> tuple[int, int]:
        """Points received: (loss, validation)."""
        if not self.available:
            return 0, 0
        return len(self._loss[0]), len(self._metric[0])

    def drawn_points(self) -> tuple[list[float], list[float]]:
        """(steps, losses) of the loss curve in the picture shown now."""
        if self._drawn is None:
            return [], []
        return list(self._drawn.loss[0]), list(self._drawn.loss[1])

    def drawn_metric(self) -> tuple[list[float], list[float], str]:
        """(steps, values, name) of the validation curve in the picture shown now."""
        if self._drawn is None:
            return [], [], self.metric_name
        return list(self._drawn.metric[0]), list(self._drawn.metric[1]), self._drawn.metric_name

    def picture_size(self) -> tuple[int, int] | None:
        """(width, height) in widget pixels of the picture shown now (None before one)."""
        return None if self._drawn is None else (self._drawn.width, self._drawn.height)

    # ------------------------------------------------------------------ drawing

    def redraw(self) -> None:
        """Ask the render thread for a picture of every point received so far (now)."""
        self._timer.stop()
        if not self.available:
            return
        ratio = float(self.devicePixelRatioF())
        width, height = self._size()
        scene = Scene(
            width=width,
            height=height,
            ratio=ratio,
            loss=(tuple(self._loss[0]), tuple(self._loss[1])),
            metric=(tuple(self._metric[0]), tuple(self._metric[1])),
            metric_name=self.metric_name,
        )
        _RENDERER.submit(self._key, scene)
        if not self._poll.isActive():
            self._poll.start()

    def _schedule(self) -> None:
        if self.available and not self._timer.isActive():
            self._timer.start()

    def _collect(self) -> None:
        picture, pending = _RENDERER.take(self._key)
        if picture is not None:
            self._image, self._drawn = picture
            self.pictures += 1
            self.update()
            if (self._drawn.width, self._drawn.height) != self._size():
                self._schedule()  # resized while it was drawn
        if not pending:
            self._poll.stop()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._schedule()  # a sharp picture of the new size soon; until then a scaled one

    def _size(self) -> tuple[int, int]:
        return max(self.width(), MIN_SIZE[0]), max(self.height(), MIN_SIZE[1])

    def paintEvent(self, _event) -> None:
        if not self.available:
            return
        painter = QPainter(self)
        if self._image is None:
            painter.fillRect(self.rect(), QColor(BACKGROUND))
        else:
            painter.drawImage(QRect(0, 0, self.width(), self.height()), self._image)
        painter.end()


class _Renderer:
    """One daemon thread drawing the plots' pictures with matplotlib's Agg renderer.

    Requests are kept per plot and only the newest waits: a slow picture makes the next
    one cover more points instead of queueing up. Each plot has its own figure, used by
    this thread only. The thread never touches a widget: the GUI thread collects the
    finished pictures (:meth:`take`).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._requests: dict[int, Scene | None] = {}
        self._results: dict[int, tuple[QImage, Scene]] = {}
        self._drawing: int | None = None
        self._thread: threading.Thread | None = None

    def submit(self, key: int, scene: Scene) -> None:
        with self._condition:
            self._requests[key] = scene
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="segloop-plot", daemon=True)
                self._thread.start()
            self._condition.notify()

    def take(self, key: int) -> tuple[tuple[QImage, Scene] | None, bool]:
        """(the newest finished picture of plot ``key`` or None, whether one is coming)."""
        with self._condition:
            picture = self._results.pop(key, None)
            return picture, key in self._requests or self._drawing == key

    def forget(self, key: int) -> None:
        """Drop the figure of a deleted plot."""
        with self._condition:
            self._results.pop(key, None)
            self._requests[key] = None
            self._condition.notify()

    def _run(self) -> None:
        figures: dict[int, _Figure] = {}
        while True:
            with self._condition:
                while not self._requests:
                    self._condition.wait()
                key = next(iter(self._requests))
                scene = self._requests.pop(key)
                self._drawing = key
            image = None
            if scene is None:
                figures.pop(key, None)
            else:
                try:
                    if key not in figures:
                        figures[key] = _Figure()
                    image = figures[key].render(scene)
                except Exception:  # pragma: no cover - a plot must never break training
                    log.warning("the training plot could not be drawn", exc_info=True)
            with self._condition:
                self._drawing = None
                if image is not None and key in figures:
                    self._results[key] = (image, scene)


class _Figure:
    """A matplotlib figure (no Qt canvas) with the two curves; lives in the render thread."""

    def __init__(self) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.0, 2.2), dpi=100, facecolor=BACKGROUND, layout="tight")
        FigureCanvasAgg(self.figure)
        self.loss_axes = self.figure.add_subplot(1, 1, 1)
        self.metric_axes = self.loss_axes.twinx()
        (self.loss_line,) = self.loss_axes.plot([], [], color=LOSS_COLOUR, lw=1.2)
        (self.metric_line,) = self.metric_axes.plot(
            [], [], color=METRIC_COLOUR, marker="o", ms=4, lw=1.2
        )
        for axes in (self.loss_axes, self.metric_axes):
            axes.set_facecolor(BACKGROUND)
            axes.tick_params(colors=FOREGROUND, labelsize=8)
            for spine in axes.spines.values():
                spine.set_color(FOREGROUND)
        self.loss_axes.set_xlabel("step", color=FOREGROUND, fontsize=8)
        self.loss_axes.set_ylabel("training loss", color=LOSS_COLOUR, fontsize=8)
        self.metric_axes.set_ylim(0.0, 1.0)

    def render(self, scene: Scene) -> QImage:
        """The picture of ``scene`` (RGBA, ``scene.ratio`` device pixels per pixel)."""
        dpi = 100.0 * scene.ratio
        self.figure.set_dpi(dpi)
        self.figure.set_size_inches(scene.width / 100.0, scene.height / 100.0)
        self.loss_line.set_data(*scene.loss)
        self.metric_line.set_data(*scene.metric)
        (x0, x1), (y0, y1) = scene.limits
        self.loss_axes.set_xlim(x0, x1)
        self.loss_axes.set_ylim(y0, y1)
        self.metric_axes.set_ylabel(
            f"validation {scene.metric_name}", color=METRIC_COLOUR, fontsize=8
        )
        canvas = self.figure.canvas
        canvas.draw()
        buffer = canvas.buffer_rgba()
        height, width = buffer.shape[:2]
        image = QImage(bytes(buffer), width, height, 4 * width, QImage.Format.Format_RGBA8888)
        image = image.copy()  # own the pixels (the bytes object goes away)
        image.setDevicePixelRatio(scene.ratio)
        return image


_RENDERER = _Renderer()


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
