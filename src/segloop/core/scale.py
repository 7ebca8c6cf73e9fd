"""Object-size estimation and rescaling of images, labels and probability maps.

Networks are trained at one typical object diameter; images are rescaled by
``target_diameter / diameter`` before prediction and the outputs are mapped back to the
original shape with :func:`resize_to_shape`.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.transform import resize


def _object_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel counts of the non-zero labels of one 2D frame."""
    flat = np.asarray(labels).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    if flat.dtype == bool:
        flat = flat.astype(np.uint8)
    if flat.min() < 0:
        raise ValueError("labels must be non-negative")
    if int(flat.max()) > 4 * flat.size:  # sparse huge ids: avoid a giant bincount
        values, counts = np.unique(flat, return_counts=True)
        return counts[values > 0]
    counts = np.bincount(flat)[1:]
    return counts[counts > 0]


def estimate_diameter(labels: np.ndarray, area_weighted: bool = False) -> float:
    """Median equivalent diameter ``sqrt(4 * area / pi)`` of the labelled objects.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(H, W)`` or ``(T, H, W)`` (objects counted per frame, so label
        ids may repeat across frames). Boolean masks count as one object per frame.
    area_weighted : bool
        Weight each object by its area: the diameter of the object a random foreground
        pixel belongs to. Robust to the many small fragments a network produces on
        objects much larger than it was trained on (used by ``diameter="auto"``).

    Returns
    -------
    float
        Median diameter in pixels; NaN if there are no objects.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        areas = _object_areas(labels)
    elif labels.ndim == 3:
        areas = np.concatenate([_object_areas(frame) for frame in labels])
    else:
        raise ValueError(f"labels must be (H, W) or (T, H, W), got shape {labels.shape}")
    if areas.size == 0:
        return float("nan")
    diameters = np.sqrt(4.0 * areas / np.pi)
    if not area_weighted:
        return float(np.median(diameters))
    order = np.argsort(diameters)
    cumulative = np.cumsum(areas[order].astype(float))
    return float(diameters[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def scale_factor(diameter: float, target_diameter: float) -> float:
    """Factor that brings objects of ``diameter`` to ``target_diameter`` pixels.

    Raises
    ------
    ValueError
        If either value is not a finite positive number (e.g. NaN from an image without
        objects).
    """
    for name, value in (("diameter", diameter), ("target_diameter", target_diameter)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite positive number, got {value}")
    return float(target_diameter) / float(diameter)


def _check_factor(factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"scale factor must be a finite positive number, got {factor}")


def _scaled_shape(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    height, width = shape[-2:]
    return max(1, round(height * factor)), max(1, round(width * factor))


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel, pixel centres aligned (as skimage order 0)."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.clip(np.floor(centres).astype(np.intp), 0, n_in - 1)


def _resize_2d(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    if order == 0:  # exact for any dtype (no float round trip of large label ids)
        rows = _nearest_indices(array.shape[0], shape[0])
        cols = _nearest_indices(array.shape[1], shape[1])
        return array[np.ix_(rows, cols)]
    shrinking = shape[0] < array.shape[0] or shape[1] < array.shape[1]
    return resize(
        array,
        shape,
        order=order,
        mode="edge",
        anti_aliasing=bool(order > 0 and shrinking),
        preserve_range=True,
    )


def _float_dtype(array: np.ndarray) -> np.dtype:
    return array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)


def resize_to_shape(array: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize the last two axes of ``array`` to exactly ``shape``.

    Parameters
    ----------
    array : np.ndarray
        ``(C, h, w)`` probability map (use ``order=1``) or ``(h, w)`` label/class map
        (use ``order=0``).
    shape : tuple of int
        Target ``(H, W)``.
    order : int
        0 = nearest neighbour (dtype preserved, no smoothing); 1 = linear (float output,
        anti-aliased when shrinking).

    Returns
    -------
    np.ndarray
        ``(C, H, W)`` or ``(H, W)``; the input itself if it already has that shape.
    """
    array = np.asarray(array)
    shape = (int(shape[0]), int(shape[1]))
    if array.ndim not in (2, 3):
        raise ValueError(f"expected a (h, w) or (C, h, w) array, got shape {array.shape}")
    if array.shape[-2:] == shape:
        return array
    dtype = array.dtype if order == 0 else _float_dtype(array)
    if array.ndim == 2:
        return _resize_2d(array, shape, order).astype(dtype)
    return np.stack([_resize_2d(channel, shape, order).astype(dtype) for channel in array])


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Rescale a 2D image (or ``(C, H, W)`` per channel) by ``factor``, linearly.

    The output has ``(round(H * factor), round(W * factor))`` pixels (at least 1), is
    anti-aliased when shrinking and keeps the intensity range. Floating inputs keep their
    dtype, others become float32. ``factor == 1`` returns the input unchanged.
    """
    _check_factor(factor)
    image = np.asarray(image)
    if factor == 1:
        return image
    return resize_to_shape(image, _scaled_shape(image.shape, factor), order=1)


def rescale_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Rescale a 2D label/class map by ``factor`` with nearest neighbour, dtype preserved.

    ``factor == 1`` returns the input unchanged.
    """
    _check_factor(factor)
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2D (H, W), got shape {labels.shape}")
    if factor == 1:
        return labels
    return resize_to_shape(labels, _scaled_shape(labels.shape, factor), order=0)


def rescale_raw_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Rescale a raw 2-D grey (H, W) or colour (H, W, 3|4) image (float32 result)."""
    if factor == 1.0:
        return image
    data = np.asarray(image, dtype=np.float32)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        return np.ascontiguousarray(
            np.moveaxis(rescale_image(np.moveaxis(data, -1, 0), factor), 0, -1)
        )
    return rescale_image(data, factor)
