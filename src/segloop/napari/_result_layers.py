"""The result layers of a segment run: built in the worker, shown one per event-loop turn.

Adding a layer to napari costs a fixed 50-100 ms of the GUI thread whatever its size (the
vispy visual and its overlays, the layer controls, the selection), and more while a
worker keeps the CPU busy. A segment run adds up to five layers, so doing them in one
handler froze the window for half a second or more. Here the worker thread prepares each
layer's data (final dtype, contiguous, styles decided) and :class:`Stager` runs the
additions from a timer, one per turn of the event loop, so that painting and input are
handled in between. The worker's arrays are handed to napari as they are: no
copy is made in the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._stager import Stager  # noqa: F401 - imported from here by benchmarks/

FOREGROUND_STYLE = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive"}
UNCERTAINTY_STYLE = {"colormap": "magma", "contrast_limits": (0.0, 1.0), "blending": "additive"}
#: The predicted distance to the object edge (distance-head models): hidden by default.
DISTANCE_STYLE = {
    "colormap": "viridis",
    "contrast_limits": (0.0, 1.0),
    "blending": "additive",
    "visible": False,
}


@dataclass
class LayerOutput:
    """One result layer: ``"<image> <suffix>"`` of ``kind`` with ``data`` and ``style``;
    ``select``: the layer the user works on next, selected when it is added (the others
    are added without changing the selection)."""

    suffix: str
    kind: str  # "labels" or "image"
    data: np.ndarray
    style: dict[str, Any] = field(default_factory=dict)
    select: bool = False


#: Suffixes of the Labels layers a segment run writes (``"<image> <suffix>"``).
LABELS_SUFFIXES = ("classes", "instances")


def segment_outputs(result: Any) -> list[LayerOutput]:
    """The layers of a segment result (an ``adapters.SegmentOutput``), in the order they
    are stacked: classes, foreground (instance models), distance (distance-head models),
    instances, uncertainty (if asked for). Runs in the worker thread."""
    seg = result.segmentation
    class_model = result.target == "classes"
    outputs = [
        LayerOutput(
            "classes",
            "labels",
            _ready(seg.classes),
            {"opacity": 0.5, "visible": class_model},
            select=class_model,
        )
    ]
    if not class_model:  # "foreground" = not class 1: meaningless for a class map
        outputs.append(
            LayerOutput(
                "foreground", "image", _ready(seg.foreground, np.float32), dict(FOREGROUND_STYLE)
            )
        )
    if seg.distance is not None:  # below the instances, hidden until asked for
        outputs.append(
            LayerOutput("distance", "image", _ready(seg.distance, np.float32), dict(DISTANCE_STYLE))
        )
    outputs.append(
        LayerOutput(
            "instances", "labels", _ready(seg.instances), {"opacity": 0.6}, select=not class_model
        )
    )
    if result.uncertainty is not None:
        outputs.append(
            LayerOutput(
                "uncertainty",
                "image",
                _ready(result.uncertainty, np.float32),
                dict(UNCERTAINTY_STYLE),
            )
        )
    return outputs


def _ready(array: np.ndarray, dtype: Any = None) -> np.ndarray:
    """``array`` C-contiguous in ``dtype`` (its own dtype if None), copied only if needed."""
    return np.ascontiguousarray(array, dtype=dtype)
