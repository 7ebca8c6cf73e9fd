"""Evaluate a model on labelled images and tune its post-processing on a validation split."""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .instances import instances_from_probabilities
from .metrics import MatchCounts, count_error, match_instances, pixel_iou, seg_counts
from .modelio import ModelBundle
from .progress import Progress, StopCheck
from .scale import estimate_diameter
from .segment import SegmentOptions, segment_iter


@dataclass
class LabelledImage:
    """A raw image with its instance labels (or class ids) and an optional ignore mask."""

    image: np.ndarray
    labels: np.ndarray
    name: str = ""
    ignore: np.ndarray | None = None


@dataclass
class EvaluationReport:
    """Metrics over a set of images (instances pooled over all images, like StarDist)."""

    matches: MatchCounts
    seg: float
    pixel_iou: float
    count_errors: list[float]
    per_image: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Flat JSON-ready dict of the headline numbers."""
        return {
            **self.matches.as_dict(),
            "seg": self.seg,
            "pixel_iou": self.pixel_iou,
            "median_count_error": float(np.median(self.count_errors))
            if self.count_errors
            else None,
            "n_images": len(self.per_image),
        }


def evaluate_iter(
    bundle: ModelBundle,
    data: Sequence[LabelledImage],
    options: SegmentOptions | None = None,
    should_stop: StopCheck = None,
    true_diameter: bool = False,
) -> Generator[Progress, None, EvaluationReport]:
    """Segment each image and compare with its labels.

    ``true_diameter`` rescales each image using the diameter measured from its own
    labels, for models trained rescaled (used during training, where the validation
    split's scale is known).
    """
    options = options or SegmentOptions()
    total_matches = MatchCounts(0, 0, 0, 0.0)
    seg_sum, seg_n, inter, union = 0.0, 0, 0, 0
    errors, rows = [], []
    for index, item in enumerate(data):
        frame_options = options
        if true_diameter and bundle.metadata.get("rescaled") and bundle.diameter:
            measured = estimate_diameter(item.labels)
            if not np.isnan(measured):
                frame_options = SegmentOptions(**{**options.__dict__, "diameter": measured})
        result = yield from segment_iter(bundle, item.image, frame_options, should_stop)
        pred, true = result.instances, item.labels
        matches = match_instances(true, pred)
        seg_total, n_ref = seg_counts(true, pred)
        total_matches = total_matches + matches
        seg_sum, seg_n = seg_sum + seg_total, seg_n + n_ref
        inter += int(np.count_nonzero((pred > 0) & (true > 0)))
        union += int(np.count_nonzero((pred > 0) | (true > 0)))
        errors.append(count_error(true, pred))
        rows.append(
            {
                "name": item.name,
                "n_true": int(len(np.unique(true)) - (true == 0).any()),
                "n_pred": int(len(np.unique(pred)) - (pred == 0).any()),
                **matches.as_dict(),
                "seg": seg_total / n_ref if n_ref else float("nan"),
                "pixel_iou": pixel_iou(pred > 0, true > 0),
            }
        )
        yield Progress("evaluate", index + 1, len(data), item.name)
    return EvaluationReport(
        total_matches,
        seg_sum / seg_n if seg_n else float("nan"),
        inter / union if union else 1.0,
        errors,
        rows,
    )


POSTPROCESS_GRID = {
    "fg_threshold": (0.4, 0.5, 0.6),
    "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "smooth": (0.0, 1.0, 2.0),
}


def tune_postprocess(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    diameter: float | None,
    distances: Sequence[np.ndarray | None] | None = None,
) -> tuple[dict[str, float], float]:
    """Grid-search the instance post-processing for the best pooled F1@0.5.

    Returns the best settings and their F1. ``min_size`` is tried at 0 and at a few
    fractions of the typical object area (from ``diameter``); probabilities must be at the
    network's scale (not rescaled) for the sizes to mean what they say. ``distances``:
    the predicted distance maps of a model with a distance head (seeds come from them).
    """
    if distances is None:
        distances = [None] * len(probabilities)
    min_sizes = [0]
    if diameter:
        area = np.pi * diameter**2 / 4
        min_sizes += [int(area * f) for f in (0.05, 0.15)]
    best: tuple[float, dict[str, float]] = (-1.0, {})
    grid = itertools.product(
        POSTPROCESS_GRID["fg_threshold"],
        POSTPROCESS_GRID["seed_threshold"],
        min_sizes,
        POSTPROCESS_GRID["smooth"],
    )
    for fg, seed, min_size, smooth in grid:
        total = MatchCounts(0, 0, 0, 0.0)
        for probs, true, distance in zip(probabilities, labels, distances, strict=True):
            pred = instances_from_probabilities(
                probs,
                fg_threshold=fg,
                seed_threshold=seed,
                min_size=min_size,
                smooth=smooth,
                distance=distance,
            )
            total = total + match_instances(true, pred)
        if total.f1 > best[0]:
            settings = {"fg_threshold": fg, "seed_threshold": seed, "min_size": min_size}
            best = (total.f1, {**settings, "smooth": smooth})
    return best[1], best[0]
