"""napari writer: Labels layers as compressed TIFF (one page per frame for stacks)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
    written = adapters.write_labels_tiff(path, np.asarray(data), record, pixel_size)
    return [str(written)]


def _pixel_size(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The pixel size of a layer from its ``scale`` and ``units`` in napari's meta dict."""

    class _Layer:  # layer_pixel_size reads .scale and .units
        scale = tuple(meta.get("scale") or (1.0, 1.0))
        units = tuple(meta.get("units") or ())

    return adapters.layer_pixel_size(_Layer())
