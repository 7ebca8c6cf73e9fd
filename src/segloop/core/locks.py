"""One lock per project folder, across threads and processes.

Storing a correction (three files and their history) and numbering a new model version
must not interleave: two threads of napari (Save and Train), napari and ``segloop
project add``, or two ``segloop finetune`` runs on one project. The thread lock orders
the threads of one process; an OS lock on ``<project>/.lock`` orders processes and is
released by the system when a process dies, so a crash never leaves the project locked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Name of the lock file in a project folder.
LOCK_NAME = ".lock"

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def _thread_lock(root: Path) -> threading.Lock:
    key = str(root.resolve())
    with _GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


def _lock_file(fd: int) -> None:
    """Block until this process holds the OS lock on the open file ``fd``."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(0.05)
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock_file(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


@contextmanager
def project_lock(root: str | Path) -> Iterator[None]:
    """Hold the lock of the project folder ``root`` (which must exist) for the body."""
    root = Path(root)
    with _thread_lock(root):
        fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_file(fd)
            try:
                yield
            finally:
                _unlock_file(fd)
        finally:
            os.close(fd)
