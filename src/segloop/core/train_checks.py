"""Ranges of the training options and the checks :class:`~segloop.core.training.TrainConfig`
and :func:`~segloop.core.training.train_iter` make before any work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .memory import check_fits
from .scale import estimate_diameter

if TYPE_CHECKING:
    from .evaluation import LabelledImage

#: Bounds of the training options (inclusive): a week of training, a crop the network
#: and the memory can take, batches that fit.
MAX_MINUTES = 7 * 24 * 60.0
MAX_EPOCHS = 10**7
CROP_RANGE = (16, 4096)
BATCH_RANGE = (1, 1024)
#: Object diameters (pixels) training may rescale to.
DIAMETER_RANGE = (1.0, 10_000.0)
#: Largest factor by which training may rescale a pair (either way).
MAX_TRAIN_SCALE = 10.0


def check_number(
    name: str,
    value: Any,
    low: float,
    high: float,
    low_open: bool = False,
    finite: bool = True,
) -> None:
    """``ValueError`` unless ``value`` is a (finite) number in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number (got {value})")
    if value < low or value > high or (low_open and value == low):
        bound = f"above {low:g}" if low_open else f"at least {low:g}"
        upper = f" and at most {high:g}" if math.isfinite(high) else ""
        raise ValueError(f"{name} must be {bound}{upper} (got {value:g})")


def check_integer(name: str, value: Any, low: int, high: int) -> None:
    """``ValueError`` unless ``value`` is an integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be between {low} and {high} (got {value})")


#: Bytes per (rescaled) training pixel kept in memory by a Sample plus the transient
#: arrays of the targets and the weight map (float64 distance planes).
SAMPLE_BYTES_PER_PIXEL = 20 + 40


def check_samples_fit(data: Sequence[LabelledImage], factors: Sequence[float]) -> None:
    """Refuse, before any rescaling, training data that would not fit in memory."""
    pixels = sum(
        max(1, round(item.labels.shape[0] * f)) * max(1, round(item.labels.shape[1] * f))
        for item, f in zip(data, factors, strict=True)
    )
    largest = max(factors) if factors else 1.0
    check_fits(
        pixels * SAMPLE_BYTES_PER_PIXEL,
        f"training on {len(data)} image(s) ({pixels / 1e6:.1f} Mpixel after rescaling "
        f"up to {largest:.3g}x)",
        "use fewer or smaller images, or another --diameter",
    )


def pair_scale(labels: np.ndarray, target_diameter: float | None) -> float:
    """Factor that gives the pair's objects ``target_diameter`` (1.0 if unset/unknown)."""
    if not target_diameter:
        return 1.0
    measured = estimate_diameter(labels)
    return 1.0 if not measured or math.isnan(measured) else target_diameter / measured


def checked_pair_scale(item: LabelledImage, target_diameter: float | None) -> float:
    """:func:`pair_scale` of one training pair, refused beyond :data:`MAX_TRAIN_SCALE`.

    Raises
    ------
    ValueError
        Naming the image, when its objects would be enlarged or shrunk more than
        :data:`MAX_TRAIN_SCALE` times (e.g. a mask whose only object is one pixel).
    """
    factor = pair_scale(item.labels, target_diameter)
    if not 1.0 / MAX_TRAIN_SCALE <= factor <= MAX_TRAIN_SCALE:
        measured = estimate_diameter(item.labels)
        raise ValueError(
            f"{item.name}: its objects are {measured:.1f} px across (median); rescaling them "
            f"to {target_diameter:g} px would scale the image {factor:.3g}x (limit "
            f"{MAX_TRAIN_SCALE:g}x either way); check the mask or train with --diameter none"
        )
    return factor
