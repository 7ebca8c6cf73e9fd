"""Run GUI-thread steps one per event-loop turn, with the window's repaint in a turn of its own.

Adding a napari layer costs the GUI thread 50-100 ms, and Qt repaints the window in the same
turn of the event loop, so adding several layers in one handler froze the window for half
a second or more. :class:`Stager` runs queued steps from a timer, one per turn, and holds
the window's painting during each step, so that input and the repaint are handled between
steps. See docs/benchmarks.md, "The window stays responsive".
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QWidget

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

    def hold_paint_this_turn(self) -> None:
        """Hold the window's painting until this handler has returned (plus
        :data:`PAINT_RELEASE_MS`): for a handler that changes layers itself."""
        held = self._hold_paint()
        if held is not None:
            _release_paint_later(held)

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
