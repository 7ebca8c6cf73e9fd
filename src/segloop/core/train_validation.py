"""Validation during training: scoring checkpoints and tuning post-processing on the
validation images (used by :func:`segloop.core.training.train_iter`)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .device import compute_settings, prepare_network
from .evaluation import LabelledImage, TunedPostprocess, evaluate_iter, tune_postprocess
from .modelio import ModelBundle
from .param_groups import training_mode
from .progress import Progress, StopCheck
from .scale import rescale_labels, rescale_raw_image
from .segment import SegmentOptions, segment_iter
from .train_checks import pair_scale

if TYPE_CHECKING:
    from .training import TrainConfig


def _validate(bundle, val_data, config, should_stop):
    """Pooled F1@0.5 (instances; the mean of the per-domain F1s when the images come
    from several domains) or pixel accuracy on labelled pixels (classes)."""
    bundle.network.eval()
    # native scale (or each image's true diameter for rescaled models), whatever the
    # model's prediction default: comparable between checks and one pass per image
    options = SegmentOptions(device=config.device, diameter="native")
    if bundle.target == "instances":
        report = yield from evaluate_iter(
            bundle, val_data, options, should_stop, true_diameter=True
        )
        metrics = {"f1": report.matches.f1, "seg": report.seg, "ap": report.matches.ap}
        score = report.matches.f1
        groups = domain_groups(val_data)
        if groups:  # out-of-distribution validation: macro-average of domains
            domains = sorted(set(groups))
            for domain in domains:
                rows = [
                    row
                    for row, item in zip(report.per_image, val_data, strict=True)
                    if item.domain == domain
                ]
                tp, fp, fn = (sum(row[key] for row in rows) for key in ("tp", "fp", "fn"))
                metrics[f"f1[{domain}]"] = 2 * tp / max(1, 2 * tp + fp + fn)
            score = float(np.mean([metrics[f"f1[{d}]"] for d in domains]))
            metrics["macro_f1"] = score
    else:
        correct = total = 0
        for item in val_data:
            result = yield from segment_iter(bundle, item.image, options, should_stop)
            labelled = item.labels > 0
            correct += int(np.count_nonzero(result.classes[labelled] == item.labels[labelled]))
            total += int(np.count_nonzero(labelled))
        score = correct / total if total else float("nan")
        metrics = {"accuracy": score}
    # back to the training's device and memory format (prediction may have changed them)
    network = prepare_network(bundle.network, compute_settings(config.device, training=True))
    training_mode(network, config.freeze_batchnorm)
    return score, metrics


def domain_groups(val_data: Sequence[LabelledImage]) -> list[str] | None:
    """Each validation image's domain when there are several (scores are then averaged
    over domains, as in :func:`_validate`), else None (pooled)."""
    domains = [item.domain for item in val_data]
    return domains if len(set(domains)) > 1 else None


def tune_iter(
    bundle: ModelBundle,
    val_data: Sequence[LabelledImage],
    config: TrainConfig,
    should_stop: StopCheck | None = None,
) -> Generator[Progress, None, TunedPostprocess]:
    """Store the post-processing that scores best on the validation images (F1 minus
    median count error, see :func:`tune_postprocess`, with ``config``'s ``tune_grid``,
    ``tune_seg_weight``, ``tune_keep_current`` and ``tune_keep_margin``) in the bundle
    metadata, and return what was found. Images are segmented at the network's scale.
    Validation images from several domains are scored by the mean over domains."""
    bundle.network.eval()
    probs, labels, distances = [], [], []
    for item in val_data:
        image, truth = item.image, item.labels
        options = SegmentOptions(device=config.device, diameter="native")
        if bundle.metadata.get("rescaled"):
            # tune at the network's scale, where min_size and smoothing are defined
            factor = pair_scale(truth, bundle.diameter)
            image, truth = rescale_raw_image(image, factor), rescale_labels(truth, factor)
            options.diameter = bundle.diameter
        result = yield from segment_iter(bundle, image, options, should_stop)
        probs.append(result.probabilities)
        distances.append(result.distance)
        labels.append(truth)
    tuned = tune_postprocess(
        probs,
        labels,
        bundle.diameter,
        distances,
        quick=config.tune_grid == "quick",
        smooth=float(bundle.postprocess["smooth"]),
        seg_weight=config.tune_seg_weight,
        baseline=bundle.postprocess if config.tune_keep_current else None,
        groups=domain_groups(val_data),
        baseline_margin=config.tune_keep_margin,
    )
    if tuned.settings:
        bundle.metadata["postprocess"] = {**bundle.postprocess, **tuned.settings}
    return tuned
