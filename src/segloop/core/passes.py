"""One prediction pass: predict a normalised frame at a given scale, and turn the
network's outputs into a class map and instances with the model's (or the user's)
post-processing settings."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .instances import connected_components, instances_from_probabilities, refine_outlines
from .memory import FLOAT32, check_fits
from .modelio import ModelBundle
from .predict import predict_probabilities_iter
from .scale import rescale_image, resize_to_shape

if TYPE_CHECKING:
    from .segment import SegmentOptions


def instance_settings(
    bundle: ModelBundle, options: SegmentOptions, area_scale: float
) -> dict[str, float]:
    """Instance post-processing: the user's choices, else the model's, with sizes and
    smoothing converted to pixels of a grid whose pixel area is ``area_scale`` x the
    network's."""
    post = bundle.postprocess

    def pick(name: str):
        value = getattr(options, name)
        return post[name] if value is None else value

    return {
        "fg_threshold": pick("fg_threshold"),
        "seed_threshold": pick("seed_threshold"),
        "min_size": int(round(pick("min_size") * area_scale)),
        "min_seed_size": max(1, int(round(post["min_seed_size"] * area_scale))),
        "smooth": float(post.get("smooth", 0.0)) * math.sqrt(area_scale),
        "min_peak": float(pick("min_peak")),
        "split_large": float(pick("split_large")),
    }


def split_outputs(bundle: ModelBundle, outputs: np.ndarray):
    """(class probabilities, distance or None) from the network's (n_outputs, H, W)."""
    n_classes = bundle.config.n_classes
    distance = outputs[n_classes] if bundle.config.distance_head else None
    return outputs[:n_classes], distance


def postprocess(
    bundle: ModelBundle, outputs: np.ndarray, options: SegmentOptions, area_scale: float
):
    """Class map and instances from the network's outputs on the input grid."""
    probs, distance = split_outputs(bundle, outputs)
    classes = np.argmax(probs, axis=0).astype(np.uint8)
    if bundle.target == "instances":
        labels = instances_from_probabilities(
            probs, **instance_settings(bundle, options, area_scale), distance=distance
        )
        return classes, labels
    # "classes" target: class k is stored as k + 1, 0 = unknown below the threshold.
    classes = classes + 1
    if options.unknown_threshold > 0:
        classes[probs.max(axis=0) < options.unknown_threshold] = 0
    labels = np.zeros(classes.shape, np.int32)
    for class_id in np.unique(classes[classes > 0]):
        part = connected_components(classes == class_id, min_size=options.min_size or 0)
        labels[part > 0] = part[part > 0] + labels.max()
    return classes, labels


def predict_at_scale(bundle, frame, factor, options, settings, should_stop, stage, tta):
    """Probabilities for one normalised 2-D frame, predicted at ``factor`` x its size."""
    if factor != 1.0:
        height, width = (max(1, round(n * factor)) for n in frame.shape[-2:])
        check_fits(
            FLOAT32 * height * width * (2 + bundle.config.n_outputs),
            f"rescaling a {frame.shape[-2]}x{frame.shape[-1]} frame {factor:.3g}x to the "
            f"model's object size ({height}x{width}; diameter {options.diameter})",
            "give the objects' true diameter in pixels, or diameter 'native'",
        )
    scaled = rescale_image(frame, factor) if factor != 1.0 else frame
    probs = yield from predict_probabilities_iter(
        bundle, scaled, options.tile, options.batch, settings, should_stop, stage, tta
    )
    if factor != 1.0:
        probs = resize_to_shape(probs, frame.shape[-2:], order=1)
    return probs


def refine(bundle, labels, probs, fine_probs, options, fine_factor):
    """:func:`refine_outlines` with the post-processing settings of the fine pass."""
    settings = instance_settings(bundle, options, 1.0 / fine_factor**2)
    # the coarse objects are the seeds, already filtered by size and peak
    del settings["min_seed_size"], settings["min_peak"], settings["split_large"]
    probs, distance = split_outputs(bundle, probs)
    fine_probs, fine_distance = split_outputs(bundle, fine_probs)
    return refine_outlines(
        labels,
        probs,
        fine_probs,
        **settings,
        coarse_distance=distance,
        fine_distance=fine_distance,
    )
