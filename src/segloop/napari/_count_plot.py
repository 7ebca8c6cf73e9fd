"""Counts over time: a small line plot of objects per frame, drawn with QPainter.

Drawing with QPainter (no matplotlib figure) keeps a redraw under a millisecond for any
number of frames, so a recount never stalls the window. :meth:`CountsPlot.save_png`
renders the same picture at print size into a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QImage, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Least height of the plot in the dock (px).
MIN_HEIGHT = 120
LINE = QColor("#4fc3f7")
CURRENT = QColor("#ffb74d")
#: Size of an exported picture (px).
EXPORT_SIZE = (1200, 600)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """About ``count`` round tick values from 0 to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(int(math.ceil(top / step)) + 1)]


class CountsPlot(QWidget):
    """Objects per frame against the frame index; the current frame is marked."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setMinimumHeight(MIN_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.frames = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)
        self.current: int | None = None
        self.title = ""

    def set_counts(self, frames: np.ndarray, counts: np.ndarray, title: str = "") -> None:
        """Show ``counts`` per frame (equal-length integer arrays)."""
        self.frames = np.asarray(frames, np.int64)
        self.counts = np.asarray(counts, np.int64)
        self.title = title
        self.update()

    def set_current(self, frame: int | None) -> None:
        """Mark ``frame`` (the viewer's current one)."""
        if frame != self.current:
            self.current = frame
            self.update()

    def paintEvent(self, _event) -> None:
        painter = QPainter(self)
        try:
            draw(painter, QRectF(self.rect()), self.frames, self.counts, self.current, self.title)
        finally:
            painter.end()

    def save_png(self, path: str | Path, size: tuple[int, int] = EXPORT_SIZE) -> Path:
        """Render the plot (white background, print size) into ``path`` (a PNG)."""
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_name(path.name + ".png")
        image = QImage(size[0], size[1], QImage.Format.Format_ARGB32)
        image.fill(QColor("white"))
        painter = QPainter(image)
        try:
            draw(
                painter,
                QRectF(0, 0, *size),
                self.frames,
                self.counts,
                None,
                self.title,
                ink=QColor("black"),
                scale=2.0,
            )
        finally:
            painter.end()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        if not image.save(str(tmp), "PNG"):
            tmp.unlink(missing_ok=True)
            raise OSError(f"cannot write {path}")
        tmp.replace(path)
        return path


def draw(
    painter: QPainter,
    area: QRectF,
    frames: np.ndarray,
    counts: np.ndarray,
    current: int | None,
    title: str,
    ink: QColor | None = None,
    scale: float = 1.0,
) -> None:
    """Draw axes, ticks, the count line and the current frame into ``area``."""
    ink = ink or QColor("#d0d0d0")
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    font = painter.font()
    font.setPointSizeF(max(font.pointSizeF(), 8.0) * scale * 0.9)
    painter.setFont(font)
    metrics = painter.fontMetrics()
    left = metrics.horizontalAdvance("00000") + 10 * scale
    bottom = metrics.height() * 2 + 6 * scale
    top = metrics.height() + 8 * scale
    plot = QRectF(area.left() + left, area.top() + top, area.width() - left - 12 * scale,
                  area.height() - top - bottom)  # fmt: skip
    painter.setPen(QPen(ink, scale))
    painter.drawText(
        QRectF(area.left(), area.top(), area.width(), top),
        Qt.AlignmentFlag.AlignCenter,
        title or "objects per frame",
    )
    if len(frames) == 0 or plot.width() <= 0 or plot.height() <= 0:
        return
    y_ticks = nice_ticks(float(counts.max(initial=0)))
    y_top = y_ticks[-1] or 1.0
    x_low, x_high = float(frames.min()), float(frames.max())
    x_span = (x_high - x_low) or 1.0

    def to_point(frame: float, count: float) -> QPointF:
        x = plot.left() + (frame - x_low) / x_span * plot.width()
        y = plot.bottom() - count / y_top * plot.height()
        return QPointF(x, y)

    grid = QColor(ink)
    grid.setAlpha(60)
    for tick in y_ticks:
        y = to_point(x_low, tick).y()
        painter.setPen(QPen(grid, scale))
        painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
        painter.setPen(QPen(ink, scale))
        painter.drawText(
            QRectF(area.left(), y - metrics.height() / 2, left - 6 * scale, metrics.height()),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            f"{tick:g}",
        )
    for tick in nice_ticks(x_span, 5):
        frame = x_low + tick
        if frame > x_high + 1e-9:
            break
        x = to_point(frame, 0).x()
        painter.drawText(
            QRectF(x - 40 * scale, plot.bottom() + 3 * scale, 80 * scale, metrics.height()),
            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
            f"{frame:g}",
        )
    painter.drawText(
        QRectF(
            plot.left(),
            area.bottom() - metrics.height() - 2 * scale,
            plot.width(),
            metrics.height(),
        ),  # fmt: skip
        Qt.AlignmentFlag.AlignHCenter,
        "frame",
    )
    painter.drawRect(plot)
    path = QPainterPath(to_point(frames[0], counts[0]))
    for frame, count in zip(frames[1:], counts[1:], strict=True):
        path.lineTo(to_point(frame, count))
    painter.setPen(QPen(LINE, 2 * scale))
    painter.drawPath(path)
    if len(frames) <= 200:
        painter.setBrush(LINE)
        for frame, count in zip(frames, counts, strict=True):
            painter.drawEllipse(to_point(frame, count), 2.5 * scale, 2.5 * scale)
    if current is not None and x_low <= current <= x_high:
        x = to_point(current, 0).x()
        painter.setPen(QPen(CURRENT, 1.5 * scale, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
