"""Whole segmentation pipeline: normalise, rescale to the model's object size, predict,
map back to the input grid and turn probabilities into class and instance labels."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from . import auto_size
from .device import compute_settings
from .imageio import image_axes, prepare_image, to_grayscale, validate_image
from .memory import FLOAT32, check_fits, frame_bytes
from .modelio import ModelBundle
from .passes import postprocess, predict_at_scale, refine, split_outputs
from .predict import count_tiles, default_tile
from .progress import Progress, StopCheck, run_to_end


@dataclass
class SegmentOptions:
    """User choices for :func:`segment_iter` (``None`` = the model's stored default).

    ``diameter`` is the typical object diameter in pixels of the input image, ``"auto"``
    to estimate it with a first pass, ``"native"`` to assume the scale of the model's
    training images (no rescaling for models trained at native scale), or ``None`` for
    the model's stored default (``metadata["predict"]["diameter"]``; native if unset).
    ``tta`` averages the 8 flips/rotations of every tile (8x slower); ``None`` uses the
    model's stored choice (off unless its validation split chose it). ``colour`` says how
    an RGB image becomes the network's grey input (``"luma"`` or ``"hematoxylin"``,
    :func:`~segloop.core.imageio.to_grayscale`); ``None`` uses the model's
    ``preprocess.colour``.
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
    colour: str | None = None


def input_colour(bundle: ModelBundle, options: SegmentOptions) -> str:
    """How RGB becomes grey for this run: the option, else the model's own choice."""
    return options.colour or bundle.preprocess["colour"]


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
    probs = yield from predict_at_scale(
        bundle, frame, factor, options, settings, should_stop, stage, tta and not measure
    )
    classes, labels = postprocess(bundle, probs, options, 1.0 / factor**2)
    used = model_diameter / factor if model_diameter else None
    if measure:
        first_probs, first_factor = probs, factor
        factor, used, probs, classes, labels = yield from auto_size.measure_and_rescale(
            bundle, frame, options, settings, should_stop, stage, factor, (probs, classes, labels)
        )
        if tta:
            probs = yield from predict_at_scale(
                bundle, frame, factor, options, settings, should_stop, stage + " (TTA)", True
            )
            classes, labels = postprocess(bundle, probs, options, 1.0 / factor**2)
        if auto_size.AUTO_REFINE and factor < first_factor:
            # shrunk: objects and splits from the coarse pass, outlines from the sharp one
            labels = refine(bundle, labels, probs, first_probs, options, first_factor)
    return probs, classes, labels, used, factor


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
    image: np.ndarray, intensity_range: tuple[float, float], invert: bool, colour: str = "luma"
) -> np.ndarray:
    """``(x - low) / (high - low)`` with a given range (not clipped), optionally inverted;
    ``x`` is the grey image (:func:`~segloop.core.imageio.to_grayscale` with ``colour``)."""
    validate_image(image)
    low, high = (float(v) for v in intensity_range)
    span = high - low if high - low > 1e-6 else 1.0
    gray = (to_grayscale(image, colour=colour) - np.float32(low)) / np.float32(span)
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
    colour = input_colour(bundle, options)
    is_stack = image_axes(image).startswith("T")
    check_segmentation_fits(bundle, image, is_stack)
    if options.intensity_range is not None:
        frames = normalize_fixed(
            image, options.intensity_range, bool(options.invert_frames), colour
        )
    else:
        frames = prepare_image(image, invert=pre["invert"], low=low, high=high, colour=colour)
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
    probs, distances = zip(*(split_outputs(bundle, frame) for frame in outputs), strict=True)
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
