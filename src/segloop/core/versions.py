"""Model versions of a correction project, listed from file headers without torch.

Kept free of torch so the napari widgets can list versions without slowing start-up.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .metadata import read_metadata
from .progress import StopCheck, check_stop

VERSION_NAME = re.compile(r"v(\d+)\.safetensors")


@dataclass
class VersionInfo:
    """One saved model version: ``models/v<N>.safetensors`` and its metadata."""

    version: int
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def finetune(self) -> dict[str, Any]:
        return self.metadata.get("finetune", {})

    @property
    def metrics(self) -> dict[str, Any]:
        return self.finetune.get("metrics", {})

    @property
    def stopped(self) -> bool:
        return bool(self.finetune.get("stopped"))


#: Headers already read: absolute path -> (file stamp, metadata). A project's
#: panel re-lists its versions after every run; a version file is written once (a file
#: written again under a reused number has another stamp), so re-listing costs a
#: ``stat`` per version instead of a header read (about 1.5 ms each). Bounded: the
#: least recently used entries go first.
_HEADERS: dict[Path, tuple[tuple[int, ...], dict[str, Any]]] = {}
_MAX_HEADERS = 1024
_HEADERS_LOCK = threading.Lock()  # the GUI thread and a Train worker both list versions


def _cached_metadata(path: Path) -> dict[str, Any]:
    """``read_metadata(path)``, from :data:`_HEADERS` while the file is unchanged (same
    inode, size, modification and change times); the dict is shared between calls, so
    callers must not modify it."""
    stamp = _stamp(path)
    key = path.absolute()
    with _HEADERS_LOCK:
        cached = _HEADERS.pop(key, None)
        if cached is not None and cached[0] == stamp:
            _HEADERS[key] = cached  # now the most recently used
            return cached[1]
    metadata = read_metadata(path)
    with _HEADERS_LOCK:
        _HEADERS.pop(key, None)
        _HEADERS[key] = (stamp, metadata)
        while len(_HEADERS) > _MAX_HEADERS:
            _HEADERS.pop(next(iter(_HEADERS)))
    return metadata


def _stamp(path: Path) -> tuple[int, ...]:
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _version_files(folder: Path) -> list[tuple[int, Path]]:
    """``(number, path)`` of every ``v<N>.safetensors`` in ``folder`` (none if absent)."""
    found = []
    for path in folder.glob("v*.safetensors") if folder.is_dir() else []:
        match = VERSION_NAME.fullmatch(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return found


def headers_read(models_dir: str | os.PathLike) -> bool:
    """Whether :func:`list_versions` would read no file header for ``models_dir`` (every
    version's header is in :data:`_HEADERS` for its current stamp): then listing costs a
    ``stat`` per version and may run in the GUI thread."""
    for _, path in _version_files(Path(models_dir).expanduser()):
        try:
            stamp = _stamp(path)
        except OSError:
            continue  # gone: list_versions skips it too
        with _HEADERS_LOCK:
            cached = _HEADERS.get(path.absolute())
        if cached is None or cached[0] != stamp:
            return False
    return True


def list_versions(
    models_dir: str | os.PathLike, should_stop: StopCheck = None
) -> list[VersionInfo]:
    """Versions in ``models_dir``, oldest first; unreadable (half-copied) files are skipped.

    The metadata of each :class:`VersionInfo` is shared with later calls (see
    :data:`_HEADERS`): read it, do not modify it. ``should_stop`` is checked before each
    file (:class:`~segloop.core.progress.Cancelled` when it says stop).
    """
    found = []
    for number, path in _version_files(Path(models_dir).expanduser()):
        check_stop(should_stop)
        try:
            found.append(VersionInfo(number, path, _cached_metadata(path)))
        except (OSError, ValueError, RuntimeError):
            continue
    return sorted(found, key=lambda v: v.version)
