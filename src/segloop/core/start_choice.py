"""Pick the shipped model to fine-tune from: the one that already outlines the user's
corrections best.

A lab correcting phase-contrast fibroblasts should not start from a fluorescence nuclei
network when a phase-contrast one ships: before training, every shipped instance model
segments the corrected frames (at the scale fine-tuning would train it at:
:func:`tuning_scale`) and the one with the highest CTC SEG on them is the start
(:data:`AUTO_START`, ``segloop finetune --init auto``, *Start: auto* in the widget).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from .evaluation import LabelledImage, evaluate_iter
from .metadata import read_metadata
from .networks import fine_tune_scale
from .progress import Progress, StopCheck
from .recipe import AUTO_START  # noqa: F401  (the request value that asks for a choice)
from .samples import median_diameter
from .segment import SegmentOptions

#: Corrections scored per candidate (the first ones; scoring costs one prediction each).
MAX_SCORED = 4


@dataclass
class StartChoice:
    """The chosen start model and every candidate's score on the corrections."""

    name: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chosen": self.name, "scores": self.scores}


def scorable(corrections: Sequence[LabelledImage]) -> list[LabelledImage]:
    """Corrections that can score a model: dense ones (every pixel labelled) with at
    least one object, the first :data:`MAX_SCORED` of them."""
    dense = [c for c in corrections if c.ignore is None and c.labels.any()]
    return dense[:MAX_SCORED]


def tuning_scale(bundle, measured: float | None) -> float | str:
    """The ``diameter`` that shows ``bundle`` the corrections as fine-tuning will: their
    measured object size where fine-tuning rescales them to the model's diameter (a
    rescaled model, or objects outside a native model's range), else ``"native"``."""
    if measured is None:
        return "native"
    # fine_tune_scale answers the model's diameter where it rescales, else "auto"
    scale = fine_tune_scale(bundle, "auto", measured)
    rescales = bundle.metadata.get("rescaled") or scale != "auto"
    return float(measured) if rescales else "native"


def choose_start_iter(
    corrections: Sequence[LabelledImage],
    candidates: Sequence[str] | None = None,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, StartChoice]:
    """Score each candidate (default: every shipped instance model) on the corrections
    and return the best by SEG (ties: F1, then the candidates' order).

    Raises
    ------
    ValueError
        When no correction is dense with objects (sparse scribbles cannot score a
        model) or there is no candidate.
    """
    from .modelio import load_model, resolve_model_path, shipped_models

    items = scorable(corrections)
    if not items:
        raise ValueError(
            "choosing the start model needs a dense correction with objects (every "
            "pixel labelled); pick the start model yourself for sparse corrections"
        )
    names = list(candidates) if candidates is not None else list(shipped_models())
    measured = median_diameter(items)
    scores: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        if read_metadata(resolve_model_path(name)).get("target", "instances") != "instances":
            continue
        yield Progress("choose start", index, len(names), f"scoring {name} on the corrections")
        bundle = load_model(name)
        options = SegmentOptions(diameter=tuning_scale(bundle, measured))
        report = yield from evaluate_iter(bundle, items, options, should_stop)
        scores[name] = {"seg": round(report.seg, 4), "f1": round(report.matches.f1, 4)}
    if not scores:
        raise ValueError(f"no instance model among {names} to start from")
    best = max(scores, key=lambda n: (scores[n]["seg"], scores[n]["f1"], -names.index(n)))
    yield Progress("choose start", len(names), len(names), f"starting from {best}")
    return StartChoice(best, scores)
