"""How a fine-tuned version turns colour corrections into the network's grey input.

Every shipped network sees one grey channel; RGB images become grey by BT.601 luma. In
H&E, luma keeps little of what tells a nucleus (hematoxylin, blue-purple) from the
cytoplasm around it (eosin, pink). The hematoxylin channel of a colour deconvolution
(``preprocess.colour = "hematoxylin"``) keeps exactly that. When the corrections are in
colour, the fine-tune service scores the start model on them with each conversion before
training (at the scale fine-tuning trains at, as :mod:`segloop.core.start_choice` does)
and the version keeps the one with the higher SEG; the start model's own conversion wins
ties. The record goes to ``metadata["colour_choice"]``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

import numpy as np

from .evaluation import LabelledImage, evaluate_iter
from .image_arrays import COLOUR_MODES, _has_channels, channels_identical
from .modelio import ModelBundle
from .progress import Progress, StopCheck
from .samples import median_diameter
from .segment import SegmentOptions
from .start_choice import scorable, tuning_scale


def is_colour(image: np.ndarray) -> bool:
    """An RGB(A) image whose three colour channels are not all the same."""
    return _has_channels(np.shape(image)) and not channels_identical(image)


def choose_colour_iter(
    bundle: ModelBundle,
    corrections: Sequence[LabelledImage],
    should_stop: StopCheck = None,
) -> Generator[Progress, None, dict | None]:
    """Set ``bundle``'s ``preprocess.colour`` to the conversion that outlines the colour
    corrections best, and return the record (``{"chosen": mode, "scores": {mode: {"seg",
    "f1"}}}``).

    Returns None, and changes nothing, for a class model or when no dense correction
    with objects is in colour.
    """
    items = scorable([c for c in corrections if is_colour(c.image)])
    if bundle.target != "instances" or not items:
        return None
    current = bundle.preprocess["colour"]
    options = SegmentOptions(diameter=tuning_scale(bundle, median_diameter(items)))
    scores: dict[str, dict[str, float]] = {}
    preprocess = bundle.metadata.setdefault("preprocess", {})
    try:
        for index, mode in enumerate(COLOUR_MODES):
            yield Progress("colour", index, len(COLOUR_MODES), f"scoring {mode} on the corrections")
            preprocess["colour"] = mode
            report = yield from evaluate_iter(bundle, items, options, should_stop)
            scores[mode] = {"seg": round(report.seg, 4), "f1": round(report.matches.f1, 4)}
    finally:
        preprocess["colour"] = current  # also when stopped: the start's conversion stays
    order = [current] + [m for m in COLOUR_MODES if m != current]  # ties: the start's
    chosen = max(order, key=lambda m: (scores[m]["seg"], scores[m]["f1"], -order.index(m)))
    preprocess["colour"] = chosen
    yield Progress("colour", len(COLOUR_MODES), len(COLOUR_MODES), f"colour as {chosen}")
    return {"chosen": chosen, "scores": scores}
