"""Import torch in a worker thread without freezing napari's GUI thread.

The first import of torch holds the GIL for long stretches, and while it does the GUI
thread cannot run either, however little it has to do:

- the dynamic loader runs libtorch's static initialisers inside ``dlopen`` (0.2-0.4 s
  here, longer on a loaded machine), and CPython's import machinery calls ``dlopen`` with
  the GIL held;
- the burst of new long-lived objects sets off Python's *full* garbage collections, each
  of which scans every object of the process (0.1-0.5 s once napari is loaded).

:func:`preload_torch` (run by the segment worker before anything touches torch) loads the
libtorch libraries through the C library's ``dlopen``, which ctypes calls *without* the
GIL, so that the later ``import torch`` finds them loaded, and does the imports inside
:func:`no_full_collections`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: Modules a segment run needs (torch and segloop's model code).
SEGMENT_MODULES = ("torch", "segloop.core.modelio", "segloop.core.segment")
#: ... and a training run: building torch's AdamW imports torch._dynamo (~800 modules,
#: sympy among them; 1 s, and a full collection of 0.25-0.3 s under load, on the first Train).
TRAIN_MODULES = (*SEGMENT_MODULES, "segloop.core.training", "torch._dynamo")
#: libtorch's libraries, in load order, with the flags torch itself loads them with.
_LIBRARIES = (
    ("libtorch_global_deps.so", os.RTLD_NOW | os.RTLD_GLOBAL),
    ("libc10.so", os.RTLD_NOW | os.RTLD_LOCAL),
    ("libtorch_cpu.so", os.RTLD_NOW | os.RTLD_LOCAL),
    ("libtorch_cuda.so", os.RTLD_NOW | os.RTLD_LOCAL),
)

_lock = threading.Lock()
_done: set[str] = set()


@contextlib.contextmanager
def no_full_collections() -> Iterator[None]:
    """Run a burst of imports (or of other allocations, such as many model headers)
    without setting off full garbage collections.

    The collector is off meanwhile; afterwards every tracked object goes to the permanent
    generation and straight back into the oldest one (``gc.freeze(); gc.unfreeze()``).
    The objects the imports created then count as examined, so they do not trigger a
    full collection of the whole process later either. Nothing stays frozen: cycles among
    them are still collected by the next full collection, whenever it comes.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # leave alone objects someone else froze on purpose
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def preload_torch(modules: tuple[str, ...] = SEGMENT_MODULES) -> None:
    """Import ``modules`` (once per process) the way that keeps the GUI thread running.

    Call it from a worker thread. Errors are left to the real import that follows.
    """
    with _lock:
        missing = [name for name in modules if name not in _done and name not in sys.modules]
        if not missing:
            return
        if "torch" not in sys.modules:
            _dlopen_libtorch()
        with no_full_collections():
            for name in missing:
                try:
                    importlib.import_module(name)
                except ImportError:  # reported by the job's own import
                    log.debug("preloading %s failed", name, exc_info=True)
                    return
                _done.add(name)


def preload_for_training() -> None:
    """:func:`preload_torch` of :data:`TRAIN_MODULES`, for the start of a training worker.

    ``torch._dynamo`` imports triton where it is installed, so segloop's guard against the
    triton crash (``core.device.avoid_triton_crash``) runs first, as training does.
    """
    try:
        from segloop.core.device import avoid_triton_crash
    except ImportError:  # pragma: no cover - without the guard, leave torch._dynamo alone
        preload_torch(TRAIN_MODULES[:-1])
        return
    avoid_triton_crash()
    preload_torch(TRAIN_MODULES)


def _dlopen_libtorch() -> None:
    """Load libtorch's shared libraries with the GIL released (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.origin is None:
            return
        folder = os.path.join(os.path.dirname(spec.origin), "lib")
        libc = ctypes.CDLL(None)
        dlopen = libc.dlopen
        dlopen.restype = ctypes.c_void_p
        dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    except (OSError, AttributeError, ImportError, ValueError):
        return
    for name, flags in _LIBRARIES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            # a CDLL function call releases the GIL; a failure (None) is left to torch
            dlopen(path.encode(), flags)
