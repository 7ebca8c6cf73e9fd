"""The object size a fine-tuned version predicts with by default, checked on its
corrections (part of the correct-and-retrain recipe, :mod:`segloop.core.finetune`)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from .evaluation import LabelledImage, evaluate_iter
from .modelio import ModelBundle
from .progress import Progress, StopCheck
from .segment import SegmentOptions


def check_predict_size(
    bundle: ModelBundle,
    check_set: Sequence[LabelledImage],
    margin: float | None,
    should_cancel: StopCheck = None,
) -> Generator[Progress, None, dict[str, Any] | None]:
    """Keep an inherited ``diameter: auto`` prediction default, or switch the version to
    its corrections' scale when that scores more than ``margin`` better F1@0.5 on
    ``check_set`` (both recorded in ``metadata["size_check"]``).

    'auto' measures object size area-weighted and compares it with the model's median
    diameter; on objects whose sizes vary a lot (EM cells) that mistakes a right pass
    for a coarse one and shrinks the image until neighbours merge. The corrections show
    it: they are at the scale the user images at.
    """
    if margin is None or bundle.target != "instances" or not check_set:
        return None
    if bundle.predict_defaults["diameter"] != "auto":
        return None
    yield Progress("tune", 0, 1, "checking the object size on the corrections")
    scores = {}
    for mode in ("auto", "native"):
        report = yield from evaluate_iter(
            bundle, check_set, SegmentOptions(diameter=mode), should_cancel
        )
        scores[mode] = round(float(report.matches.f1), 4)
    chosen = "native" if scores["native"] - scores["auto"] > margin else "auto"
    if chosen == "native":
        bundle.metadata["predict"] = {**bundle.metadata.get("predict", {}), "diameter": None}
    record = {
        "f1_auto": scores["auto"],
        "f1_native": scores["native"],
        "margin": margin,
        "chosen": chosen,
        "images": [item.name for item in check_set],
    }
    bundle.metadata["size_check"] = record
    return record
