"""Evaluate a model on labelled images and tune its post-processing on a validation split."""

from __future__ import annotations

import itertools
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .instances import instances_from_probabilities, object_peaks, seed_map_of
from .metrics import (
    MatchCounts,
    count_error,
    match_instances,
    matched_predictions,
    n_objects,
    pixel_iou,
    relative_count_error,
    seg_counts,
    seg_per_prediction,
)
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
    #: acquisition domain (data set, lab, modality); validation sets with several
    #: domains are scored by the mean over domains, so no single one dominates
    domain: str = ""


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
    "fg_threshold": (0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
    "smooth": (0.0, 1.0, 2.0),
    "min_peak": (0.0, 0.5, 0.55, 0.6, 0.65, 0.7),
    # tried last, with the best of the rest fixed
    "split_large": (1.5, 2.0),
}
#: The grid of a fine-tune (seconds, not minutes, on a CPU): the model's own smoothing,
#: fewer thresholds, min_size 0 or 15 % of the typical object area; min_peak and
#: split_large as in the full grid (they cost one extra pass each).
QUICK_GRID = {
    "fg_threshold": (0.5, 0.6, 0.7),
    "seed_threshold": (0.3, 0.4, 0.5, 0.6),
    "smooth": None,  # the model's current value
    "min_size_fractions": (0.15,),
    "min_peak": POSTPROCESS_GRID["min_peak"],
    "split_large": POSTPROCESS_GRID["split_large"],
}


@dataclass
class TunedPostprocess:
    """Best post-processing found by :func:`tune_postprocess` and how it scored.

    ``score`` is the pooled F1@0.5 minus the median per-image count error (the two
    things a user counting cells needs, weighted equally), plus ``seg_weight`` times
    the pooled CTC SEG (how well the objects found are outlined).
    """

    settings: dict[str, float]
    f1: float
    count_error: float
    seg: float = 0.0
    seg_weight: float = 0.0
    #: the ``baseline`` settings given to :func:`tune_postprocess` were kept
    kept_baseline: bool = False

    @property
    def score(self) -> float:
        """Pooled F1 minus median count error plus weighted SEG (higher is better)."""
        return self.f1 - self.count_error + self.seg_weight * self.seg


def _macro_scores(
    rows: Sequence[tuple[int, int, int, float, float, int]], groups: Sequence[str] | None
) -> tuple[float, float, float]:
    """(F1, median count error, SEG) of per-image ``(tp, fp, fn, count error, summed
    Jaccard, true objects)`` rows: pooled within each group, then the mean over groups
    (one group when ``groups`` is None, i.e. pooled over all images)."""
    keys = list(groups) if groups is not None else [""] * len(rows)
    if len(keys) != len(rows):
        raise ValueError(f"{len(keys)} groups for {len(rows)} validation images")
    scores = []
    for key in sorted(set(keys)):
        mine = [row for row, k in zip(rows, keys, strict=True) if k == key]
        tp, fp, fn = (sum(row[i] for row in mine) for i in range(3))
        n_true = sum(row[5] for row in mine)
        seg = sum(row[4] for row in mine) / n_true if n_true else 0.0
        f1 = MatchCounts(tp, fp, fn, 0.0).f1
        scores.append((f1, float(np.median([row[3] for row in mine])), seg))
    f1s, errors, segs = zip(*scores, strict=True)
    return float(np.mean(f1s)), float(np.mean(errors)), float(np.mean(segs))


def _peak_variants(
    labels: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    seed_maps: Sequence[np.ndarray],
    min_peaks: Sequence[float],
    groups: Sequence[str] | None = None,
) -> list[tuple[float, float, float]]:
    """(F1, median count error, pooled SEG) of ``labels`` after dropping the objects
    whose seed-map peak is below each of ``min_peaks``; matched once, since IoU > 0.5
    matches (and SEG partners) are unique and dropping objects changes no other pair.
    With ``groups``, each figure is the mean over the groups of the pooled one."""
    per_image = []
    for pred, true, seed_map in zip(labels, truths, seed_maps, strict=True):
        per_image.append(
            (
                n_objects(true),
                matched_predictions(true, pred),
                seg_per_prediction(true, pred),
                object_peaks(pred, seed_map),
            )
        )
    results = []
    for min_peak in min_peaks:
        rows = []
        for n_true, matched, seg_of, peaks in per_image:
            kept = peaks >= min_peak
            hits = int(np.count_nonzero(matched & kept))
            n_kept = int(np.count_nonzero(kept))
            error = relative_count_error(n_true, n_kept)
            rows.append(
                (hits, n_kept - hits, n_true - hits, error, float(seg_of[kept].sum()), n_true)
            )
        results.append(_macro_scores(rows, groups))
    return results


def tune_postprocess(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    diameter: float | None,
    distances: Sequence[np.ndarray | None] | None = None,
    quick: bool = False,
    smooth: float = 1.0,
    seg_weight: float = 0.0,
    baseline: dict[str, float] | None = None,
    groups: Sequence[str] | None = None,
    baseline_margin: float = 0.0,
) -> TunedPostprocess:
    """Grid-search the instance post-processing (:data:`POSTPROCESS_GRID`) for the best
    pooled F1@0.5 minus median count error plus ``seg_weight`` times the pooled SEG
    (:attr:`TunedPostprocess.score`); then try splitting large seeds (``split_large``)
    with the best of the rest.

    ``min_size`` is tried at 0 and at a few fractions of the typical object area (from
    ``diameter``); probabilities must be at the network's scale (not rescaled) for the
    sizes to mean what they say. ``distances``: the predicted distance maps of a model
    with a distance head (seeds come from them). ``quick``: :data:`QUICK_GRID` (about
    ten times fewer watershed runs, for fine-tuning), keeping the model's ``smooth``.

    ``baseline``: settings in use now (a fine-tuned model's start model's). They are
    kept, and the search's best dropped, unless the best outlines the objects better:
    a higher pooled SEG, by more than ``baseline_margin`` when the best drops more
    (:func:`drops_more`). When the images are the ones the network was just trained
    on, the search's score overrates settings fitted to them, most of all settings that
    drop objects the network is less sure of; the start model's settings are the prior
    that needs evidence to move (issue #19's leave-one-modality-out benchmarks,
    docs/benchmarks.md).

    ``groups``: each image's domain (acquisition, lab, modality). F1, count error and
    SEG are then computed within each domain and averaged over domains, so the domain
    with the most images or objects does not choose the settings alone.
    """
    grid_values = dict(POSTPROCESS_GRID)
    fractions = (0.05, 0.15)
    if quick:
        grid_values = {**QUICK_GRID, "smooth": (float(smooth),)}
        fractions = QUICK_GRID["min_size_fractions"]
    if not len(probabilities):
        raise ValueError("tune_postprocess needs at least one validation image")
    if distances is None:
        distances = [None] * len(probabilities)
    min_sizes = [0]
    if diameter:
        area = np.pi * diameter**2 / 4
        min_sizes += [int(area * f) for f in fractions]
    best = TunedPostprocess({}, -1.0, float("inf"), 0.0, seg_weight)
    # the seed maps depend on the smoothing only: computed once, not per grid point
    pairs = list(zip(probabilities, distances, strict=True))
    seed_maps = {
        value: [seed_map_of(probs, value, distance) for probs, distance in pairs]
        for value in grid_values["smooth"]
    }
    grid = itertools.product(
        grid_values["fg_threshold"],
        grid_values["seed_threshold"],
        min_sizes,
        grid_values["smooth"],
    )
    min_peaks = grid_values["min_peak"]
    for fg, seed, min_size, smoothing in grid:
        settings = {
            "fg_threshold": fg,
            "seed_threshold": seed,
            "min_size": min_size,
            "smooth": smoothing,
        }
        preds = [
            instances_from_probabilities(probs, distance=distance, **settings)
            for probs, distance in pairs
        ]
        variants = _peak_variants(preds, labels, seed_maps[smoothing], min_peaks, groups)
        for min_peak, (f1, error, seg) in zip(min_peaks, variants, strict=True):
            tried = TunedPostprocess({**settings, "min_peak": min_peak}, f1, error, seg, seg_weight)
            if tried.score > best.score:
                best = tried
    best.settings["split_large"] = 0.0
    for split_large in grid_values["split_large"]:
        settings = {**best.settings, "split_large": split_large}
        tried = _score_settings(probabilities, labels, distances, settings, seg_weight, groups)
        if tried.score > best.score:
            best = tried
    if baseline is not None:
        current = {
            key: baseline[key] for key in (*best.settings, "min_seed_size") if key in baseline
        }
        kept = _score_settings(probabilities, labels, distances, current, seg_weight, groups)
        margin = baseline_margin if drops_more(best.settings, current) else 0.0
        if kept.seg >= best.seg - margin:
            kept.kept_baseline = True
            return kept
    return best


#: Post-processing settings that drop more objects (or pixels) the higher they are.
DROPPING_SETTINGS = ("fg_threshold", "min_size", "min_peak")


def drops_more(settings: dict[str, float], baseline: dict[str, float]) -> bool:
    """Whether ``settings`` are stricter than ``baseline`` in any of
    :data:`DROPPING_SETTINGS` (keys missing from either are not compared)."""
    return any(
        settings[key] > baseline[key]
        for key in DROPPING_SETTINGS
        if key in settings and key in baseline
    )


def _score_settings(
    probabilities: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    distances: Sequence[np.ndarray | None],
    settings: dict[str, float],
    seg_weight: float = 0.0,
    groups: Sequence[str] | None = None,
) -> TunedPostprocess:
    """F1, median count error and SEG of one set of settings: pooled, or the mean over
    ``groups`` of the pooled figures."""
    rows = []
    for probs, true, distance in zip(probabilities, labels, distances, strict=True):
        pred = instances_from_probabilities(probs, distance=distance, **settings)
        counts = match_instances(true, pred)
        jaccards, n_objects_here = seg_counts(true, pred)
        rows.append(
            (counts.tp, counts.fp, counts.fn, count_error(true, pred), jaccards, n_objects_here)
        )
    f1, error, seg = _macro_scores(rows, groups)
    return TunedPostprocess(settings, f1, error, seg, seg_weight)
