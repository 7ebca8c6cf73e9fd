"""One lock per project folder, across threads and processes.

Storing a correction (three files and their history) and numbering a new model version
must not interleave: two threads of napari (Save and Train), napari and ``segloop
project add``, or two ``segloop finetune`` runs on one project. The thread lock orders
the threads of one process; an OS lock on ``<project>/.lock`` orders processes and is
released by the system when a process dies, so a crash never leaves the project locked.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: Name of the lock file in a project folder.
LOCK_NAME = ".lock"

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def _thread_lock(root: Path) -> threading.Lock:
    key = str(root.resolve())
    with _GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


#: errno values of a file system without file locks (some network and FUSE mounts)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
#: errno values of ``msvcrt.locking`` while another process holds the lock
_BUSY = {errno.EACCES, errno.EDEADLK}


def _lock_file(fd: int) -> None:
    """Block until this process holds the OS lock on the open file ``fd``."""
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        import msvcrt

        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError as exc:
                if exc.errno not in _BUSY:
                    raise
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


def _open_lock_file(root: Path) -> int | None:
    """The lock file, opened for locking; None where it cannot be (a read-only project:
    nothing can be stored there, so the thread lock is enough)."""
    path = root / LOCK_NAME
    try:  # readable and writable by the whole lab (less the umask) in a shared folder
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        pass
    try:  # another user's lock file, or a read-only folder: a read-only open locks too
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


@contextmanager
def project_lock(root: str | Path) -> Iterator[None]:
    """Hold the lock of the project folder ``root`` for the body.

    Where the folder has no lock file and cannot get one (read-only), or its file system
    has no file locks, only the threads of this process are ordered (with a warning in
    the second case).
    """
    root = Path(root)
    with _thread_lock(root):
        fd = _open_lock_file(root)
        locked = False
        try:
            if fd is not None:
                try:
                    _lock_file(fd)
                    locked = True
                except OSError as exc:
                    if exc.errno not in _NO_LOCKS:
                        raise
                    log.warning(
                        "no file locks on %s (%s): saves from other processes are not ordered",
                        root,
                        exc,
                    )
            yield
        finally:
            if locked:
                _unlock_file(fd)
            if fd is not None:
                os.close(fd)
