"""Progress bar of the ``segloop`` command line (stderr)."""

from __future__ import annotations

import sys
import time


class ProgressPrinter:
    """Progress bar on stderr (redrawn in place on a terminal, else every 10 %)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last: tuple[str, int] = ("", -1)
        self.last_time = 0.0

    def __call__(self, event) -> None:
        percent = int(100 * event.fraction)
        step = percent if self.tty else percent // 10 * 10
        now = time.monotonic()
        # New stage or bucket: always; same bucket: at most every 0.2 s (tty) / 30 s (log).
        if (event.stage, step) == self.last and now - self.last_time < (0.2 if self.tty else 30):
            return
        self.last, self.last_time = (event.stage, step), now
        bar = "#" * (percent // 5)
        line = f"{event.stage:>12} [{bar:<20}] {percent:3d}% {event.message}"
        if self.tty:
            self.stream.write("\r" + line[:100].ljust(100))
            if percent >= 100:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
