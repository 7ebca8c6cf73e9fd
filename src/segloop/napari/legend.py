"""Show a model's class names and colours on a napari Labels layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Labels

    from segloop.core.classes import ClassEntry

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def legend_style(legend: Sequence[ClassEntry]) -> dict[str, Any]:
    """``colormap`` and ``features`` for a class-map Labels layer.

    The colormap paints each class value in its model colour (0 transparent); the
    features table (column ``class``, indexed by value) makes napari's status bar name
    the class under the cursor.
    """
    import pandas as pd
    from napari.utils.colormaps import DirectLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    colors: dict[int | None, Any] = {None: TRANSPARENT}
    for entry in legend:
        rgba = TRANSPARENT if entry.color is None else transform_color(entry.color)[0]
        colors[entry.value] = rgba
    features = pd.DataFrame({"index": [e.value for e in legend], "class": [e.name for e in legend]})
    return {"colormap": DirectLabelColormap(color_dict=colors), "features": features}


def apply_legend(layer: Labels, legend: Sequence[ClassEntry]) -> None:
    """Colour ``layer`` by class and name its values (see :func:`legend_style`)."""
    style = legend_style(legend)
    layer.colormap = style["colormap"]
    layer.features = style["features"]


def layer_class_colors(layer: Labels, n_classes: int) -> list[str]:
    """``#rrggbb`` colours that ``layer`` shows for values 1..n_classes."""
    from segloop.core.classes import to_hex

    rgba = np.asarray(layer.colormap.map(np.arange(1, n_classes + 1)), dtype=float)
    return [to_hex(row[:3]) for row in rgba.reshape(-1, 4)]


def layer_class_names(layer: Labels) -> dict[int, str]:
    """Names the layer's features give its values (column ``class`` or ``name``)."""
    features = layer.features
    column = next((c for c in ("class", "name") if c in features.columns), None)
    if column is None:
        return {}
    values = list(features["index"]) if "index" in features.columns else list(features.index)
    return dict(zip((int(v) for v in values), features[column].astype(str), strict=True))
