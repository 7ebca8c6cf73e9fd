"""Progress events and cancellation shared by every long-running core generator.

Long work (prediction, training) is written as a generator that yields
:class:`Progress` and *returns* its result, so napari's ``thread_worker`` can show
progress and stop it between yields, while scripts call :func:`run_to_end`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
StopCheck = Callable[[], bool] | None


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` units of ``stage``."""

    stage: str
    done: int
    total: int
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


class Cancelled(RuntimeError):
    """Raised inside a generator when its stop check says to stop."""


def check_stop(should_stop: StopCheck) -> None:
    """Raise :class:`Cancelled` if ``should_stop`` is set and returns True."""
    if should_stop is not None and should_stop():
        raise Cancelled("stopped on request")


class RunControl:
    """Stop (keep the best so far) and Cancel (keep nothing), settable from any thread."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._cancel = threading.Event()

    def stop(self) -> None:
        """End training at the next step; the best weights so far become a version."""
        self._stop.set()

    def cancel(self) -> None:
        """Abort the run wherever it is; nothing is saved."""
        self._cancel.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called."""
        if self._cancel.is_set():
            raise Cancelled("cancelled: nothing was saved")


def run_to_end(
    generator: Generator[Progress, None, T], on_progress: Callable[[Progress], None] | None = None
) -> T:
    """Drive a progress generator to completion and return its return value."""
    while True:
        try:
            event = next(generator)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
