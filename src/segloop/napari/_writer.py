"""napari writer: Labels layers as compressed TIFF (one page per frame for stacks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import adapters


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer to ``path`` (``.tif`` added if missing); returns the path."""
    written = adapters.write_labels_tiff(path, np.asarray(data))
    return [str(written)]
