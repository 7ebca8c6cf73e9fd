"""Training samples: labelled images turned into network targets, and random batches.

:func:`make_sample` normalises and rescales one labelled image and builds its targets
(3-class or class ids, the U-Net weight map, the distance map) once per run;
:func:`_batch` draws the crops and augmentations of one training step from them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .augment import augment_sample, random_crop
from .device import ComputeSettings, compute_settings
from .evaluation import LabelledImage
from .imageio import prepare_image
from .modelio import ModelBundle
from .predict import predict_probabilities
from .scale import estimate_diameter, rescale_image, rescale_labels, resize_to_shape
from .targets import (
    class_ids_to_target,
    classes_to_target,
    instances_to_classes,
    normalized_distance,
)
from .train_checks import checked_pair_scale
from .weightmap import weight_map

if TYPE_CHECKING:
    from .training import TrainConfig


@dataclass
class Sample:
    """A training pair ready for cropping: (C, H, W) image, int64 target, weight, and
    the normalised distance map for models with a distance head."""

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    n_objects: int
    distance: np.ndarray | None = None
    #: flat indices of the labelled pixels of a sparse correction (crops are drawn
    #: around them, so every step learns from what the user painted); None when dense
    labelled: np.ndarray | None = None
    #: flat indices of the object pixels (instance models with
    #: ``TrainConfig.object_crops``): the centres of object-centred crops
    objects: np.ndarray | None = None
    #: flat indices of the labelled pixels the start network gets wrong (with
    #: ``TrainConfig.error_crops``): the centres of error-centred crops
    errors: np.ndarray | None = None


#: A correction with labels on less than this share of its pixels has its crops drawn
#: around the labelled pixels (see :attr:`Sample.labelled`).
SPARSE_SHARE = 0.5
#: Median object diameters (pixels) the fast U-Net handles well without rescaling.
NATIVE_RANGE = (12.0, 45.0)
#: Diameter objects are rescaled to when they fall outside NATIVE_RANGE (as cellpose).
DEFAULT_DIAMETER = 30.0


def diameter_range(
    data: Sequence[LabelledImage],
    scales: Sequence[float],
    zoom: tuple[float, float] = (1.0, 1.0),
) -> list[float] | None:
    """Object diameters the network was trained on: the 10th and 90th percentiles of the
    per-image median diameters, in network pixels (each image's rescale factor applied),
    widened by half the zoom augmentation's log-range (``sqrt`` of its factors: zooms
    near the extremes are rare). ``diameter="auto"`` leaves images whose objects measure
    inside it at the scale they come in. None if nothing is measurable.
    """
    measured = [
        estimate_diameter(item.labels) * scale for item, scale in zip(data, scales, strict=True)
    ]
    measured = [d for d in measured if not math.isnan(d)]
    if not measured:
        return None
    low, high = np.percentile(measured, [10, 90])
    low, high = low * math.sqrt(zoom[0]), high * math.sqrt(zoom[1])
    return [round(float(low), 2), round(float(high), 2)]


def median_diameter(data: Sequence[LabelledImage]) -> float | None:
    """Median of the per-image median object diameters (pixels); None if none measurable."""
    measured = [estimate_diameter(item.labels) for item in data]
    measured = [d for d in measured if not math.isnan(d)]
    return float(np.median(measured)) if measured else None


def resolve_target_diameter(
    value: float | str | None, bundle: ModelBundle, data: Sequence[LabelledImage]
) -> float | None:
    """Turn ``TrainConfig.target_diameter`` into a number of pixels or None (native).

    ``"auto"``: a model that was trained rescaled keeps its diameter (fine-tuning);
    a model trained at native scale stays native when it already has weights from
    training (``metadata["training"]``); a new model is rescaled to
    :data:`DEFAULT_DIAMETER` only when the median object diameter of ``data`` is
    outside :data:`NATIVE_RANGE`.
    """
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    if value != "auto":
        raise ValueError(f"target diameter must be a number, 'auto' or None, not {value!r}")
    if bundle.metadata.get("rescaled"):
        return bundle.diameter
    if "training" in bundle.metadata or bundle.target != "instances":
        return None
    median = median_diameter(data)
    if median is None:
        return None
    return None if NATIVE_RANGE[0] <= median <= NATIVE_RANGE[1] else DEFAULT_DIAMETER


def prepared_frame(image: np.ndarray, bundle: ModelBundle, name: str) -> np.ndarray:
    """One training frame grey and normalised as ``bundle`` preprocesses its input.

    Raises
    ------
    ValueError
        When the image is not a single 2-D frame (RGB is converted first).
    """
    pre = bundle.preprocess
    low, high = pre["percentiles"]
    frame = prepare_image(
        image, invert=pre["invert"], low=low, high=high, name=name, colour=pre["colour"]
    )
    if frame.ndim != 2:
        raise ValueError(f"{name}: training images must be single 2-D frames")
    return frame


def make_sample(item: LabelledImage, bundle: ModelBundle, config: TrainConfig) -> Sample:
    """Normalise, rescale and turn one labelled image into network targets."""
    image = prepared_frame(item.image, bundle, item.name)
    if image.shape != item.labels.shape:
        raise ValueError(
            f"{item.name}: image shape {image.shape} differs from labels {item.labels.shape}"
        )
    labels, ignore = item.labels, item.ignore
    factor = 1.0
    if bundle.target == "instances":
        factor = checked_pair_scale(item, config.target_diameter)
    if factor != 1.0:
        image = rescale_image(image, factor)
        labels = rescale_labels(labels, factor)
        ignore = None if ignore is None else rescale_labels(ignore.astype(np.uint8), factor) > 0
    if bundle.target == "instances":
        target = classes_to_target(instances_to_classes(labels, config.border_width), ignore)
        weight = weight_map(labels, config.w0, config.sigma) if config.use_weight_map else None
    else:
        target = class_ids_to_target(labels)
        if ignore is not None:
            target[ignore] = -1
        weight = None
    n_objects = int(len(np.unique(labels)) - 1) if bundle.target == "instances" else 0
    distance = None
    if bundle.config.distance_head:
        if bundle.target != "instances":
            raise ValueError("a distance head needs an instance model")
        distance = normalized_distance(labels)
    labelled = np.flatnonzero(target >= 0)
    sparse = ignore is not None and 0 < len(labelled) < SPARSE_SHARE * target.size
    objects = None
    if bundle.target == "instances" and config.object_crops > 0:
        objects = np.flatnonzero(labels > 0).astype(np.int32) if n_objects else None
    errors = None
    if config.error_crops > 0 and not sparse:  # a sparse one's crops centre on its labels
        settings = compute_settings(config.device, training=True)
        errors = error_pixels(image, target, bundle, settings)
    return Sample(
        image[None].astype(np.float32),
        target,
        weight,
        n_objects,
        distance,
        labelled if sparse else None,
        objects,
        errors,
    )


def error_pixels(
    image: np.ndarray,
    target: np.ndarray,
    bundle: ModelBundle,
    settings: ComputeSettings | None = None,
) -> np.ndarray | None:
    """Flat indices of the labelled pixels where ``bundle``'s network, as it is now, picks
    another class than ``target`` (-1 = unlabelled, never an error); None when it gets
    every labelled pixel right.

    Parameters
    ----------
    image : ndarray
        The prepared (normalised, rescaled) 2-D training frame.
    target : ndarray
        Its int64 class target, the same shape.
    settings : ComputeSettings, optional
        Device and precision of the prediction (those the training will use).
    """
    outputs = predict_probabilities(bundle, image, settings=settings)
    predicted = outputs[: bundle.config.n_classes].argmax(axis=0)
    wrong = np.flatnonzero((target >= 0) & (predicted != target))
    return wrong.astype(np.int32) if len(wrong) else None


def split_validation(
    data: Sequence[LabelledImage], fraction: float, seed: int
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Random train/validation split; a single image is used for both (and flagged)."""
    if len(data) < 2 or fraction <= 0:
        return list(data), list(data[:1]) if fraction > 0 else []
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = min(len(data) - 1, max(1, round(len(data) * fraction)))
    return [data[i] for i in order[n_val:]], [data[i] for i in order[:n_val]]


def _zoomed_crop(arrays, size, rng, centre, margin, config):
    """A random ``size`` x ``size`` crop of every array; with a zoom range in the
    augmentation config, the crop covers ``size / s`` pixels resized to ``size`` (image
    and maps linearly, the target by nearest neighbour), ``s`` log-uniform in the range."""
    low, high = config.augment.scale_range
    if low == high == 1.0:
        return random_crop(arrays, (size, size), rng, centre=centre, margin=margin)
    zoom = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    side = max(8, round(size / zoom))
    inner_margin = min(side // 2, round(margin / zoom))
    crops = random_crop(arrays, (side, side), rng, centre=centre, margin=inner_margin)
    if side == size:
        return crops
    return [
        resize_to_shape(crop, (size, size), order=0 if crop.dtype.kind in "iub" else 1).astype(
            crop.dtype, copy=False
        )
        for crop in crops
    ]


def _random_pixel(flat_indices: np.ndarray, width: int, rng) -> tuple[int, int]:
    """(row, column) of one of ``flat_indices`` (into rows ``width`` wide), drawn at random."""
    return divmod(int(flat_indices[rng.integers(len(flat_indices))]), width)


def _batch(samples, order, geometry, config, rng, margin):
    """Random crops + augmentation for one batch; returns image, target, weight and
    distance tensors (distance None unless the samples carry distance maps)."""
    images, targets, weights, distances = [], [], [], []
    for index in order:
        sample = samples[index]
        maps = sample.weight
        if sample.distance is not None:
            weight = np.ones_like(sample.distance) if maps is None else maps
            maps = np.stack([weight, sample.distance])
        arrays = [sample.image, sample.target] + ([] if maps is None else [maps])
        centre = None
        if sample.labelled is not None:
            centre = _random_pixel(sample.labelled, sample.target.shape[1], rng)
        elif sample.errors is not None and rng.random() < config.error_crops:
            centre = _random_pixel(sample.errors, sample.target.shape[1], rng)
        elif sample.objects is not None and rng.random() < config.object_crops:
            centre = _random_pixel(sample.objects, sample.target.shape[1], rng)
        crops = _zoomed_crop(arrays, geometry.input_size, rng, centre, margin, config)
        maps = crops[2] if len(crops) > 2 else None
        image, target, maps = augment_sample(crops[0], crops[1], maps, rng, config.augment)
        inner = slice(margin, margin + geometry.output_size)
        images.append(image)
        targets.append(target[inner, inner])
        if sample.distance is not None:
            maps, distance = maps[0], maps[1]
            distances.append(distance[inner, inner])
        weights.append(
            np.ones_like(targets[-1], np.float32) if maps is None else maps[inner, inner]
        )
    return (
        torch.from_numpy(np.stack(images)),
        torch.from_numpy(np.stack(targets)),
        torch.from_numpy(np.stack(weights)),
        torch.from_numpy(np.stack(distances)) if distances else None,
    )
