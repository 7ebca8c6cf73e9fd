"""napari writer: Labels layers as compressed TIFF (one page per frame for stacks)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core import imageio

from . import adapters


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer to ``path`` (``.tif`` added if missing); returns the path.

    The TIFF records how the labels were made (the Segment widget's provenance, when it
    made them), that the user saved them from napari (so ``segloop predict`` treats the
    file as the user's, never as its own output), and the layer's pixel size in
    micrometres, when known.
    """
    from segloop.core.provenance import SAVED_FROM_NAPARI, provenance

    record = (meta.get("metadata") or {}).get(adapters.PROVENANCE_KEY)
    # saved by the user: `segloop predict` never replaces it as one of its own outputs
    record = {**(record or provenance(command="napari writer")), SAVED_FROM_NAPARI: True}
    pixel_size = _pixel_size(meta)
    written = write_labels_tiff(path, np.asarray(data), record, pixel_size)
    return [str(written)]


def write_labels_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    record: dict[str, Any],
    pixel_size: tuple[float, float] | None = None,
) -> Path:
    """Write label data as a zlib-compressed TIFF in the smallest unsigned dtype that
    holds every id (uint64 above 2**32 - 1: ids are never wrapped). ``record``
    (provenance) goes into the TIFF description, ``pixel_size`` (µm) into its resolution
    tags."""
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    if data.size and data.min() >= 0:
        top = int(data.max())
        sizes = ((2**8, np.uint8), (2**16, np.uint16), (2**32, np.uint32))
        dtype = next((kind for limit, kind in sizes if top < limit), np.uint64)
        data = data.astype(dtype, copy=False)
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        path = path.with_name(path.name + ".tif")
    from segloop.core.provenance import tiff_metadata

    record = dict(record)
    record["pixel_size_um"] = list(pixel_size) if pixel_size else record.get("pixel_size_um")
    imageio.write_tiff(path, data, metadata=tiff_metadata(record), pixel_size=pixel_size)
    return path


def _pixel_size(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The pixel size of a layer from its ``scale`` and ``units`` in napari's meta dict."""

    class _Layer:  # layer_pixel_size reads .scale and .units
        scale = tuple(meta.get("scale") or (1.0, 1.0))
        units = tuple(meta.get("units") or ())

    return adapters.layer_pixel_size(_Layer())
