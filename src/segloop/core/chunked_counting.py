"""Per-object measurements of label images larger than memory, window by window.

Each object is measured exactly once, whole: it belongs to the core that holds the top-left
corner of its bounding box, and that core is read with a margin to the bottom and right
(plus one row and column above and to the left, to see whether an object goes on there).
An object larger than the margin is measured alone, in a window grown until it fits. The
rows are the same as :func:`segloop.core.counting.count_table` on the whole image gives,
in another order.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .chunked import Box, ChunkPlan
from .counting import _format_value, count_table, micron_columns
from .imageio import atomic_output

_Y = ("centroid_y", "bbox_min_y", "bbox_max_y")
_X = ("centroid_x", "bbox_min_x", "bbox_max_x")


def _shifted(table: dict[str, np.ndarray], rows: np.ndarray, dy: int, dx: int, frame: int):
    part = {key: np.asarray(values)[rows] for key, values in table.items()}
    for key in _Y:
        part[key] = part[key] + dy
    for key in _X:
        part[key] = part[key] + dx
    part["frame"] = np.full(int(rows.sum()), frame, np.int64)  # rows: a boolean mask
    return part


def measure_chunked(
    plan: ChunkPlan,
    labels,
    read_intensity: Callable[[Box], np.ndarray] | None = None,
    pixel_size: tuple[float, float] | None = None,
    margin: int = 256,
    frame: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield per-core tables (columns of ``count_table``) covering every object once.

    Parameters
    ----------
    plan : ChunkPlan
        The cut to walk (only its cores are used).
    labels : array-like
        ``(height, width)`` integer labels (NumPy slicing: zarr, memmap...).
    read_intensity : callable, optional
        ``read_intensity(box)`` -> the intensity image over ``box`` (``(h, w)`` or
        ``(h, w, c)``).
    pixel_size : (float, float), optional
        Micrometres per pixel: adds the µm columns.
    margin : int
        How far below and right of its core an object may reach and still be measured
        with the core (larger ones are measured alone).
    """
    height, width = plan.height, plan.width
    for row, col in plan.cells():
        cy0, cy1, cx0, cx1 = plan.core(row, col)
        wy0, wx0 = max(cy0 - 1, 0), max(cx0 - 1, 0)
        wy1, wx1 = min(cy1 + margin, height), min(cx1 + margin, width)
        window = np.asarray(labels[wy0:wy1, wx0:wx1])
        intensity = read_intensity((wy0, wy1, wx0, wx1)) if read_intensity else None
        table = count_table(window, intensity)
        min_y, min_x = table["bbox_min_y"] + wy0, table["bbox_min_x"] + wx0
        own = (min_y >= cy0) & (min_y < cy1) & (min_x >= cx0) & (min_x < cx1)
        # an object cut by the window's bottom/right edge (not the image's) is too big
        cut = ((table["bbox_max_y"] == window.shape[0]) & (wy1 < height)) | (
            (table["bbox_max_x"] == window.shape[1]) & (wx1 < width)
        )
        part = _shifted(table, own & ~cut, wy0, wx0, frame)
        if pixel_size is not None:
            part.update(micron_columns(part, pixel_size))
        yield part
        for index in np.flatnonzero(own & cut):
            yield _measure_alone(
                labels, int(table["label"][index]), int(min_y[index]), int(min_x[index]),
                plan, read_intensity, pixel_size, margin, frame,
            )  # fmt: skip


def _measure_alone(labels, label, y0, x0, plan, read_intensity, pixel_size, margin, frame):
    """One object larger than the margin: grow its window until the object fits."""
    side = 2 * margin
    while True:
        y1, x1 = min(y0 + side, plan.height), min(x0 + side, plan.width)
        window = np.asarray(labels[y0:y1, x0:x1])
        mask = window == label
        fits_y = y1 == plan.height or not mask[-1].any()
        fits_x = x1 == plan.width or not mask[:, -1].any()
        if fits_y and fits_x:
            break
        side *= 2
    intensity = read_intensity((y0, y1, x0, x1)) if read_intensity else None
    table = count_table(np.where(mask, label, 0), intensity)
    part = _shifted(table, np.ones(len(table["label"]), bool), y0, x0, frame)
    if pixel_size is not None:
        part.update(micron_columns(part, pixel_size))
    return part


class CsvStream:
    """A CSV written part by part (constant ``extra`` columns first), moved into place on
    :meth:`close`; :meth:`abort` leaves nothing."""

    def __init__(self, path: str | Path, extra: dict | None = None):
        self.path = Path(path)
        self.extra = dict(extra or {})
        self._context = atomic_output(self.path)
        self._tmp = self._context.__enter__()
        self._handle = open(self._tmp, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self.header: list[str] | None = None
        self.rows = 0

    def write(self, table: dict[str, np.ndarray]) -> None:
        """Append the rows of ``table`` (its columns must match the first table's)."""
        names = list(table)
        if self.header is None:
            self.header = [*self.extra, *names]
            self._writer.writerow(self.header)
        elif names != self.header[len(self.extra) :]:
            raise ValueError(f"columns {names} differ from the first part's")
        extra = [_format_value(v) for v in self.extra.values()]
        columns = [np.asarray(table[name]) for name in names]
        for i in range(len(columns[0]) if columns else 0):
            self._writer.writerow(extra + [_format_value(c[i]) for c in columns])
        self.rows += len(columns[0]) if columns else 0

    def close(self) -> Path:
        self._handle.close()
        self._context.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        self._handle.close()
        try:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


def concat_csvs(parts: list[Path], path: Path, restval: str = "nan") -> int:
    """Stream the rows of ``parts`` into ``path`` under the union of their headers."""
    headers: list[str] = []
    for part in parts:
        with open(part, newline="", encoding="utf-8") as handle:
            for name in next(csv.reader(handle), []):
                if name not in headers:
                    headers.append(name)
    rows = 0
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, headers, restval=restval)
        writer.writeheader()
        for part in parts:
            with open(part, newline="", encoding="utf-8") as handle:
                for record in csv.DictReader(handle):
                    writer.writerow(record)
                    rows += 1
    return rows
