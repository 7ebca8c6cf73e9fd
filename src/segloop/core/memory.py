"""Memory estimates made before large allocations, so that what cannot fit is refused
up front with one line instead of being killed by the kernel later.

The estimates are deliberately simple upper bounds (bytes of the big arrays a step
allocates); :func:`check_fits` compares one with the memory the machine has available
(``MemAvailable`` of ``/proc/meminfo`` on Linux, physical memory elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Fraction of the available memory one step may plan to use.
USABLE_FRACTION = 0.8
FLOAT32 = 4


class InsufficientMemoryError(ValueError):
    """A step would need more memory than the machine has; the message says which."""


def available_bytes() -> int:
    """Memory available for new allocations, in bytes.

    Linux: ``MemAvailable`` from ``/proc/meminfo``; otherwise physical memory from
    ``os.sysconf``; 16 GiB when neither can be read. ``SEGLOOP_MEMORY_LIMIT`` (bytes)
    caps the value (for tests and shared machines).
    """
    found = None
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            found = 16 * 2**30
    limit = os.environ.get("SEGLOOP_MEMORY_LIMIT")
    if limit:
        try:
            found = min(found, int(float(limit)))
        except ValueError:
            pass
    return found


def format_bytes(n_bytes: float) -> str:
    """Human-readable size: ``'1.5 GiB'``, ``'12 MiB'``."""
    n_bytes = float(n_bytes)
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} B"


def check_fits(n_bytes: float, what: str, hint: str = "") -> None:
    """Raise :class:`InsufficientMemoryError` when ``n_bytes`` cannot fit.

    Parameters
    ----------
    n_bytes : float
        Estimated peak bytes of the step.
    what : str
        What needs it, naming the option or file (``"--tile 4096"``, ``"image a.tif"``).
    hint : str, optional
        What to change, appended after a semicolon.
    """
    available = available_bytes()
    if n_bytes > USABLE_FRACTION * available:
        message = (
            f"{what} needs about {format_bytes(n_bytes)} of memory, "
            f"only {format_bytes(available)} is available"
        )
        raise InsufficientMemoryError(message + (f"; {hint}" if hint else ""))


def canvas_bytes(height: int, width: int, channels: int) -> int:
    """Prediction canvas: ``channels`` float32 outputs, a weight plane, the padded input
    and the cropped result, for an image of ``height`` x ``width`` (padding included)."""
    return FLOAT32 * height * width * (2 * channels + 2)


def frame_bytes(height: int, width: int, channels: int) -> int:
    """Post-processing of one frame: the class probabilities on the input grid, argmax,
    instance labels and the watershed's work arrays (about 8 float64 planes)."""
    return FLOAT32 * height * width * channels + 8 * 8 * height * width


def activation_bytes(config, tile_side: int, batch: int, training: bool = False) -> int:
    """Peak activation memory of one forward pass over ``batch`` square tiles.

    Each level keeps about four feature maps of its width (two convolutions, skip,
    up-sampled copy); training keeps all of them for the backward pass (about 3x).
    """
    total = 0
    side = float(tile_side)
    channels = float(config.base_channels)
    for _level in range(config.depth):
        total += 4 * channels * side * side
        side /= 2
        channels *= 2
    peak = total if training else total / 2
    return int(FLOAT32 * batch * peak * (3 if training else 1))


def parameter_count(config) -> int:
    """Approximate number of weights of a network built from ``config`` (3x3 convs)."""
    total = 0
    channels_in = config.in_channels
    width = config.base_channels
    for level in range(config.depth):
        out = width * 2**level
        convs = 2
        if config.convs_per_level:
            convs = config.convs_per_level[min(level, len(config.convs_per_level) - 1)]
        total += 9 * channels_in * out + 9 * out * out * (convs - 1)
        channels_in = out
    return 2 * total  # decoder about as large as the encoder


def release_free_memory(min_interval: float = 0.5) -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``; no-op elsewhere).

    Long runs that allocate and free frame-sized arrays over and over (stacks, chunked
    slides) otherwise creep up: glibc raises its mmap threshold after each large free, so
    later frame-sized arrays come from the heap, which fragments and is never returned.
    Trimming walks the heap, so it is done at most once per ``min_interval`` seconds.
    """
    global _MALLOC_TRIM, _LAST_TRIM
    import time

    now = time.monotonic()
    if now - _LAST_TRIM < min_interval:
        return
    _LAST_TRIM = now
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None
_LAST_TRIM = 0.0
