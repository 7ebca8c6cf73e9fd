"""Whole segmentation pipeline: normalise, rescale to the model's object size, predict,
map back to the input grid and turn probabilities into class and instance labels."""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from .device import compute_settings
from .imageio import image_axes, prepare_image, to_grayscale, validate_image
from .instances import connected_components, instances_from_probabilities, refine_outlines
from .memory import FLOAT32, check_fits, frame_bytes
from .modelio import ModelBundle
from .predict import count_tiles, default_tile, predict_probabilities_iter
from .progress import Progress, StopCheck, run_to_end
from .scale import estimate_diameter, rescale_image, resize_to_shape

#: Rescaling is skipped when the object size is within this factor of the model's.
SCALE_TOLERANCE = 1.15
#: Most prediction passes of ``diameter="auto"``, the first one included (see
#: :func:`_measure_and_rescale`).
AUTO_MAX_PASSES = 4
#: Take the outlines of shrunk objects from the first (full-resolution) pass. Off: where
#: objects are several times the model's size that pass cuts them into pieces, and its
#: outlines then ruin the rescaled pass's objects (F1 0.83 -> 0.00 on the packaged
#: fluorescence sample at 6x; see docs/models.md, object size).
AUTO_REFINE = False
#: Keep the first pass when the measured size is inside the model's trained diameter
#: range (``metadata["diameter_range"]``); off: within SCALE_TOLERANCE of its diameter.
AUTO_USE_RANGE = True
#: ... but objects larger than this many times the model's diameter are shrunk even
#: inside that range (None: up to the range's top).
AUTO_UPPER: float | None = 1.6
#: The rescaled passes of 'auto' give the measured objects this many times the model's
#: diameter.
AUTO_TARGET = 1.0
#: Coarse probes of 'auto' before the fixed point: passes at 1/AUTO_PROBE_STEP,
#: 1/AUTO_PROBE_STEP**2, ... of the first pass's scale (0: none). They find objects many
#: times larger than the model's, which the first pass sees as small fragments of texture
#: (nuclei validation images at 6x: F1 0.818 -> 0.864), but they also take blobs of
#: merged objects for such objects on images from other sources at their own size (DSB2018
#: test images: 0.885 -> 0.858), so they are off by default (docs/models.md, object size).
AUTO_PROBES = 0
AUTO_PROBE_STEP = 3.0
#: ... skipped when the shrunk frame's shorter side would be below this many pixels.
AUTO_PROBE_MIN_SIDE = 48
#: A probe's objects are believed only if they are more than this many times the top of
#: the trained range at the first pass's scale: objects the first pass cannot have seen
#: whole. Smaller ones it saw, and a probe that finds them larger has merged neighbours
#: (0: any probe whose objects are of a trained size at its own scale).
AUTO_PROBE_BEYOND = 2.0
#: ... and only if they cover more than this many times the image area that the first
#: pass's objects cover: the first pass found scattered pieces, not whole objects (a
#: probe over a confluent sheet of cells finds blobs of merged cells covering about as
#: much; 0: no such condition).
AUTO_PROBE_COVERAGE = 3.0
#: Auto-estimated rescale factors are clamped to this range.
SCALE_LIMITS = (0.1, 10.0)


@dataclass
class SegmentOptions:
    """User choices for :func:`segment_iter` (``None`` = the model's stored default).

    ``diameter`` is the typical object diameter in pixels of the input image, ``"auto"``
    to estimate it with a first pass, ``"native"`` to assume the scale of the model's
    training images (no rescaling for models trained at native scale), or ``None`` for
    the model's stored default (``metadata["predict"]["diameter"]``; native if unset).
    ``tta`` averages the 8 flips/rotations of every tile (8x slower); ``None`` uses the
    model's stored choice (off unless its validation split chose it).
    """

    tile: int | None = None
    batch: int = 4
    device: str = "auto"
    diameter: float | str | None = None
    fg_threshold: float | None = None
    seed_threshold: float | None = None
    min_size: int | None = None
    min_peak: float | None = None
    split_large: float | None = None
    unknown_threshold: float = 0.0
    tta: bool | None = None
    #: Raw intensities mapped to 0 and 1 instead of each image's own percentiles, and
    #: whether to invert (bright background). Chunked segmentation sets both from a
    #: sample of the whole image, so that every chunk is normalised alike.
    intensity_range: tuple[float, float] | None = None
    invert_frames: bool | None = None


@dataclass
class Segmentation:
    """Result for a 2-D image (H, W) or a stack (T, H, W); arrays keep the input grid."""

    probabilities: np.ndarray  # (C, H, W) or (T, C, H, W) float32
    classes: np.ndarray  # (H, W) or (T, H, W) uint8: argmax class
    instances: np.ndarray  # (H, W) or (T, H, W) int32: 0 = background
    diameters: list[float | None]  # object diameter used per frame (None = native)
    scale_factors: list[float]
    device: str
    # (H, W) or (T, H, W) float32 predicted normalised distance (distance-head models)
    distance: np.ndarray | None = None

    @property
    def foreground(self) -> np.ndarray:
        """Probability of any non-background class."""
        return 1.0 - self.probabilities[..., 0, :, :]


def _instance_settings(
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


def _split_outputs(bundle: ModelBundle, outputs: np.ndarray):
    """(class probabilities, distance or None) from the network's (n_outputs, H, W)."""
    n_classes = bundle.config.n_classes
    distance = outputs[n_classes] if bundle.config.distance_head else None
    return outputs[:n_classes], distance


def _postprocess(
    bundle: ModelBundle, outputs: np.ndarray, options: SegmentOptions, area_scale: float
):
    """Class map and instances from the network's outputs on the input grid."""
    probs, distance = _split_outputs(bundle, outputs)
    classes = np.argmax(probs, axis=0).astype(np.uint8)
    if bundle.target == "instances":
        labels = instances_from_probabilities(
            probs, **_instance_settings(bundle, options, area_scale), distance=distance
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


def _predict_at_scale(bundle, frame, factor, options, settings, should_stop, stage, tta):
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


def resolve_diameter(bundle: ModelBundle, diameter: float | str | None) -> float | str | None:
    """A number, ``"auto"`` or None (= native scale) from a user's diameter choice."""
    if diameter is None:
        diameter = bundle.predict_defaults["diameter"]
    if diameter in (None, "native"):
        return None
    if diameter == "auto":
        return diameter
    if isinstance(diameter, bool) or not isinstance(diameter, (int, float)):
        raise ValueError(
            f"diameter must be a number of pixels, 'auto' or 'native', not {diameter!r}"
        )
    if not diameter > 0:
        raise ValueError("diameter must be positive")
    return float(diameter)


def _segment_frame(bundle, frame, options, settings, should_stop, stage):
    """Segment one normalised frame; returns (probs, classes, labels, diameter, factor)."""
    model_diameter = bundle.diameter
    diameter = resolve_diameter(bundle, options.diameter)
    tta = bool(bundle.predict_defaults["tta"]) if options.tta is None else options.tta
    measure = diameter == "auto" and bool(model_diameter) and bundle.target == "instances"
    factor = bundle.native_scale_factor
    if isinstance(diameter, float):
        factor = model_diameter / diameter if model_diameter else 1.0
    # The measuring passes of 'auto' only need rough objects: no test-time augmentation.
    probs = yield from _predict_at_scale(
        bundle, frame, factor, options, settings, should_stop, stage, tta and not measure
    )
    classes, labels = _postprocess(bundle, probs, options, 1.0 / factor**2)
    used = model_diameter / factor if model_diameter else None
    if measure:
        first_probs, first_factor = probs, factor
        factor, used, probs, classes, labels = yield from _measure_and_rescale(
            bundle, frame, options, settings, should_stop, stage, factor, (probs, classes, labels)
        )
        if tta:
            probs = yield from _predict_at_scale(
                bundle, frame, factor, options, settings, should_stop, stage + " (TTA)", True
            )
            classes, labels = _postprocess(bundle, probs, options, 1.0 / factor**2)
        if AUTO_REFINE and factor < first_factor:
            # shrunk: objects and splits from the coarse pass, outlines from the sharp one
            labels = _refine(bundle, labels, probs, first_probs, options, first_factor)
    return probs, classes, labels, used, factor


def _measure_and_rescale(bundle, frame, options, settings, should_stop, stage, factor, first_pass):
    """'auto': find the objects' size and the scale to predict them at.

    A pass at the wrong scale mismeasures: objects several times larger than the network
    knows come out as pieces, often of a size it *does* know. So the size is found as a
    fixed point: measure what a pass found, predict again at the scale that gives those
    objects the model's diameter, and repeat until a pass finds objects of the size it
    was scaled for (or AUTO_MAX_PASSES ran). Objects that measure smaller than the
    model's diameter are trusted at once (pieces are never smaller than a nucleus-sized
    blob), which keeps the expensive enlarging passes to one.

    The pass returned is the first one when the objects' size at that pass's scale is
    one the network was trained on (:func:`_inside`: from the low end of
    ``metadata["diameter_range"]`` up to AUTO_UPPER x the model's diameter), since it
    knows those sizes as they come; otherwise the last one. AUTO_UPPER (1.6) was chosen
    on the nuclei model's validation images rescaled 0.33x-6x (docs/models.md).

    Returns (factor, measured diameter in input pixels, probs, classes, labels).
    """
    model_diameter = bundle.diameter
    first = (factor, *first_pass)
    current = yield from _coarse_start(bundle, frame, options, settings, should_stop, stage, first)
    used = model_diameter / factor
    for n_pass in range(1, AUTO_MAX_PASSES + 1):
        factor, probs, classes, labels = current
        measured = estimate_diameter(labels, area_weighted=True)
        if math.isnan(measured):
            break
        used = measured
        new_factor = float(np.clip(AUTO_TARGET * model_diameter / measured, *SCALE_LIMITS))
        converged = abs(math.log(new_factor / factor)) <= math.log(SCALE_TOLERANCE)
        if converged or n_pass == AUTO_MAX_PASSES:
            break
        if (
            n_pass == 1
            and current is first
            and measured * factor < model_diameter
            and _inside(bundle, measured * factor)
        ):
            break  # small or as trained: no fragments to fear, keep the first pass
        if n_pass > 1 and measured * factor < model_diameter and new_factor > factor:
            # enlarging after a shrinking pass: take this pass's size as found
            break
        probs = yield from _predict_at_scale(
            bundle,
            frame,
            new_factor,
            options,
            settings,
            should_stop,
            f"{stage} (x{new_factor:.2g})",
            False,
        )
        classes, labels = _postprocess(bundle, probs, options, 1.0 / new_factor**2)
        current = (new_factor, probs, classes, labels)
    if current is not first and _inside(bundle, used * first[0]):
        current = first  # the size found is one the network knows at the first scale
    factor, probs, classes, labels = current
    return factor, used, probs, classes, labels


def _coarse_start(bundle, frame, options, settings, should_stop, stage, first):
    """The pass the fixed point of :func:`_measure_and_rescale` starts from (the first
    one unless AUTO_PROBES, off by default, asks for coarse probes).

    Objects many times larger than the network knows can come out of the first pass as
    a few small pieces of their texture, which measure like objects of a size it knows
    (on the nuclei model's validation images at 6x: 1 object found of 15, 16 px where
    the nuclei are 313 px). So the frame is also predicted at AUTO_PROBES coarser
    scales (each 1/AUTO_PROBE_STEP of the last; together ~12% of the first pass's cost),
    and the coarsest pass whose objects have, at its scale, a size inside the model's
    trained range, are at the first pass's scale more than AUTO_PROBE_BEYOND x the
    range's top, and cover more than AUTO_PROBE_COVERAGE x the area the first pass's
    objects cover, is the start. Objects of a size the network knows at the first scale
    vanish or shrink below that range in the probes; a probe that finds them larger has
    merged neighbours into blobs (two nuclei validation images at 0.5x-2x), the reason
    for the second condition; over confluent cells a probe finds blobs of merged cells as
    large as huge nuclei, the reason for the third (without it: F1 0.60 -> 0.00 on the
    cells model's Usiigaci test fields). On the nuclei validation images at 6x the first
    pass's pieces covered 4.5-2,000x less area than the probe's nuclei. Even so, on
    DSB2018 test images at their own size the probes cost 0.027 F1, hence off.
    """
    if not AUTO_PROBES:
        return first
    stored = bundle.metadata.get("diameter_range")
    low, high = (
        (float(v) for v in stored) if stored else (0.5 * bundle.diameter, 2.0 * bundle.diameter)
    )
    start, factor = first, first[0]
    first_coverage = float(np.mean(first[3] > 0))
    for _ in range(AUTO_PROBES):
        factor /= AUTO_PROBE_STEP
        if min(frame.shape[-2:]) * factor < AUTO_PROBE_MIN_SIDE or factor < SCALE_LIMITS[0]:
            break
        probs = yield from _predict_at_scale(
            bundle,
            frame,
            factor,
            options,
            settings,
            should_stop,
            f"{stage} (probe x{factor:.2g})",
            False,
        )
        classes, labels = _postprocess(bundle, probs, options, 1.0 / factor**2)
        measured = estimate_diameter(labels, area_weighted=True)
        if math.isnan(measured) or not low <= measured * factor <= high:
            continue
        larger = measured * first[0] > AUTO_PROBE_BEYOND * high
        if larger and np.mean(labels > 0) > AUTO_PROBE_COVERAGE * first_coverage:
            start = (factor, probs, classes, labels)
    return start


def _inside(bundle: ModelBundle, seen_diameter: float) -> bool:
    """Whether objects of ``seen_diameter`` network pixels are of a size the model was
    trained on: from the low end of its stored diameter range up to AUTO_UPPER x its
    diameter (without a stored range, within SCALE_TOLERANCE of its diameter)."""
    stored = bundle.metadata.get("diameter_range") if AUTO_USE_RANGE else None
    if stored:
        upper = float(stored[1]) if AUTO_UPPER is None else AUTO_UPPER * bundle.diameter
        return float(stored[0]) <= seen_diameter <= upper
    ratio = seen_diameter / bundle.diameter
    return 1.0 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE


def _refine(bundle, labels, probs, fine_probs, options, fine_factor):
    """:func:`refine_outlines` with the post-processing settings of the fine pass."""
    settings = _instance_settings(bundle, options, 1.0 / fine_factor**2)
    # the coarse objects are the seeds, already filtered by size and peak
    del settings["min_seed_size"], settings["min_peak"], settings["split_large"]
    probs, distance = _split_outputs(bundle, probs)
    fine_probs, fine_distance = _split_outputs(bundle, fine_probs)
    return refine_outlines(
        labels,
        probs,
        fine_probs,
        **settings,
        coarse_distance=distance,
        fine_distance=fine_distance,
    )


def check_segmentation_fits(bundle: ModelBundle, image: np.ndarray, is_stack: bool) -> None:
    """Refuse, before any work, an image whose results and per-frame work cannot fit.

    The estimate counts the normalised frames, the stacked outputs of every frame
    (probabilities, classes, instances) and one frame's post-processing.
    """
    shape = np.shape(image)
    n_frames = shape[0] if is_stack else 1
    height, width = shape[1:3] if is_stack else shape[:2]
    channels = bundle.config.n_outputs
    pixels = int(height) * int(width)
    needed = n_frames * pixels * (FLOAT32 * (2 + channels) + 1) + frame_bytes(
        height, width, channels
    )
    check_fits(
        needed,
        f"segmenting {n_frames} frame(s) of {height}x{width} pixels",
        "crop or split the image",
    )


def normalize_fixed(
    image: np.ndarray, intensity_range: tuple[float, float], invert: bool
) -> np.ndarray:
    """``(x - low) / (high - low)`` with a given range (not clipped), optionally inverted."""
    validate_image(image)
    low, high = (float(v) for v in intensity_range)
    span = high - low if high - low > 1e-6 else 1.0
    gray = (to_grayscale(image) - np.float32(low)) / np.float32(span)
    return (1.0 - gray if invert else gray).astype(np.float32, copy=False)


def segment_iter(
    bundle: ModelBundle,
    image: np.ndarray,
    options: SegmentOptions | None = None,
    should_stop: StopCheck = None,
) -> Generator[Progress, None, Segmentation]:
    """Segment a raw 2-D image (grayscale or RGB) or a 2-D+t stack, frame by frame.

    Yields :class:`Progress` per tile batch and returns a :class:`Segmentation` whose
    arrays have exactly the input's spatial shape.
    """
    options = options or SegmentOptions()
    settings = compute_settings(options.device)
    pre = bundle.preprocess
    low, high = pre["percentiles"]
    is_stack = image_axes(image).startswith("T")
    check_segmentation_fits(bundle, image, is_stack)
    if options.intensity_range is not None:
        frames = normalize_fixed(image, options.intensity_range, bool(options.invert_frames))
    else:
        frames = prepare_image(image, invert=pre["invert"], low=low, high=high)
    if not is_stack:
        frames = frames[None]
    results = []
    n_frames = len(frames)
    tile = options.tile or default_tile(bundle)
    yield Progress(
        "segment", 0, n_frames, f"{count_tiles(bundle, frames.shape[1:], tile)} tiles/frame"
    )
    for index, frame in enumerate(frames):
        stage = f"frame {index + 1}/{n_frames}" if is_stack else "predict"
        results.append(
            (yield from _segment_frame(bundle, frame, options, settings, should_stop, stage))
        )
        yield Progress("segment", index + 1, n_frames)
    outputs, classes, labels, diameters, factors = zip(*results, strict=True)
    probs, distances = zip(*(_split_outputs(bundle, frame) for frame in outputs), strict=True)
    pick = (lambda arrays: np.stack(arrays)) if is_stack else (lambda arrays: arrays[0])
    return Segmentation(
        pick(probs),
        pick(classes),
        pick(labels),
        list(diameters),
        list(factors),
        settings.describe(),
        None if distances[0] is None else pick(distances),
    )


def segment(bundle: ModelBundle, image: np.ndarray, **options) -> Segmentation:
    """Plain-function form of :func:`segment_iter`; keyword arguments are SegmentOptions."""
    return run_to_end(segment_iter(bundle, image, SegmentOptions(**options)))
