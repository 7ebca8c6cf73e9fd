"""The result layers of a segment run: built in the worker, shown one per event-loop turn.

Adding a layer to napari costs a fixed 50-100 ms of the GUI thread whatever its size (the
vispy visual and its overlays, the layer controls, the selection), and more while a
worker keeps the CPU busy. A segment run adds up to five layers, so doing them in one
handler froze the window for half a second or more. Here the worker thread prepares each
layer's data (final dtype, contiguous, styles decided) and :class:`Stager` runs the
additions from a timer, one per turn of the event loop, so that painting and input are
handled in between. The worker's arrays are handed to napari as they are: no
copy is made in the GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QWidget

FOREGROUND_STYLE = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive"}
UNCERTAINTY_STYLE = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive"}
#: The predicted distance to the object edge (distance-head models): hidden by default.
DISTANCE_STYLE = {
    "colormap": "viridis",
    "contrast_limits": (0.0, 1.0),
    "blending": "additive",
    "visible": False,
}


@dataclass
class LayerOutput:
    """One result layer: ``"<image> <suffix>"`` of ``kind`` with ``data`` and ``style``;
    ``select``: the layer the user works on next, selected when it is added (the others
    are added without changing the selection)."""

    suffix: str
    kind: str  # "labels" or "image"
    data: np.ndarray
    style: dict[str, Any] = field(default_factory=dict)
    select: bool = False


def segment_outputs(result: Any) -> list[LayerOutput]:
    """The layers of a segment result (an ``adapters.SegmentOutput``), in the order they
    are stacked: classes, foreground (instance models), distance (distance-head models),
    instances, uncertainty (if asked for). Runs in the worker thread."""
    seg = result.segmentation
    class_model = result.target == "classes"
    outputs = [
        LayerOutput(
            "classes",
            "labels",
            _ready(seg.classes),
            {"opacity": 0.5, "visible": class_model},
            select=class_model,
        )
    ]
    if not class_model:  # "foreground" = not class 1: meaningless for a class map
        outputs.append(
            LayerOutput(
                "foreground", "image", _ready(seg.foreground, np.float32), dict(FOREGROUND_STYLE)
            )
        )
    if seg.distance is not None:  # below the instances, hidden until asked for
        outputs.append(
            LayerOutput("distance", "image", _ready(seg.distance, np.float32), dict(DISTANCE_STYLE))
        )
    outputs.append(
        LayerOutput(
            "instances", "labels", _ready(seg.instances), {"opacity": 0.6}, select=not class_model
        )
    )
    if result.uncertainty is not None:
        outputs.append(
            LayerOutput(
                "uncertainty",
                "image",
                _ready(result.uncertainty, np.float32),
                dict(UNCERTAINTY_STYLE),
            )
        )
    return outputs


def _ready(array: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``array`` C-contiguous in ``dtype`` (its own dtype if None), copied only if needed."""
    return np.ascontiguousarray(array, dtype=dtype)


#: Pause between two staged steps (ms): the repaint that one step asks for, and any
#: input, are handled before the next step starts (instead of in the same turn).
STEP_GAP_MS = 20


#: How long after a step its window's painting is released (ms): a turn of the event
#: loop, with any input waiting, comes between the step and the repaint it caused.
PAINT_RELEASE_MS = 1


class Stager(QObject):
    """Runs queued GUI-thread steps one at a time, each from its own timer event.

    The timer belongs to this object, so nothing runs after its owner widget is deleted.
    When the parent is a widget, its window does not paint during a step: Qt would
    otherwise repaint it in the same turn, and the step and the repaint would freeze
    the window as one. The painting is released :data:`PAINT_RELEASE_MS` later (Qt then
    repaints the window once), so input waiting in between is handled first.
    """

    def __init__(self, parent: QObject | None = None, gap_ms: int = STEP_GAP_MS) -> None:
        super().__init__(parent)
        self._steps: list[Callable[[], None]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._gap = gap_ms
        self._timer.timeout.connect(self._run_next)

    @property
    def busy(self) -> bool:
        """True while steps are waiting."""
        return bool(self._steps)

    def run(self, steps: list[Callable[[], None]]) -> None:
        """Queue ``steps`` (after any still waiting) and start running them."""
        self._steps += steps
        if self._steps and not self._timer.isActive():
            self._timer.start(0)  # the first step right away, the others after a gap

    def run_first(self, steps: list[Callable[[], None]]) -> None:
        """Queue ``steps`` before the waiting ones (a step finishing its own work)."""
        self._steps[:0] = steps
        if self._steps and not self._timer.isActive():
            self._timer.start(self._gap)

    def flush(self) -> None:
        """Run every waiting step now (in this handler)."""
        self._timer.stop()
        while self._steps:
            self._steps.pop(0)()

    def clear(self) -> None:
        """Drop the waiting steps."""
        self._timer.stop()
        self._steps.clear()

    def _run_next(self) -> None:
        if not self._steps:
            return
        step = self._steps.pop(0)
        held = self._hold_paint()
        try:
            step()
        finally:
            if held is not None:
                _release_paint_later(held)
            if self._steps:
                self._timer.start(self._gap)

    def _hold_paint(self) -> QWidget | None:
        """Stop the parent widget's window from painting; the window, or None when there is
        none or its painting is already held (by an earlier step or by someone else)."""
        parent = self.parent()
        if not isinstance(parent, QWidget):
            return None
        window = parent.window()
        if not (window.isVisible() and window.updatesEnabled()):
            return None
        window.setUpdatesEnabled(False)
        return window


def _release_paint_later(window: QWidget) -> None:
    """Let ``window`` paint again :data:`PAINT_RELEASE_MS` from now (Qt then repaints it
    once). The timer belongs to the window, so the release happens even if the stager
    is gone by then."""
    timer = QTimer(window)
    timer.setSingleShot(True)

    def release() -> None:
        window.setUpdatesEnabled(True)
        timer.deleteLater()

    timer.timeout.connect(release)
    timer.start(PAINT_RELEASE_MS)
