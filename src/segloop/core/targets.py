"""Training targets derived from instance or class label images.

The U-Net is trained as a pixel classifier. For instance segmentation the instance label
image is turned into three classes (background, object interior, object border) so that
touching objects are separated by a border band; for semantic segmentation a class-id mask
is turned into a target where unlabelled pixels are ignored.

Targets are ``int64`` arrays in which :data:`IGNORE` (``-1``) marks pixels that do not
contribute to the loss (see :mod:`segloop.core.losses`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

BACKGROUND = 0
"""Class index of background pixels."""
INTERIOR = 1
"""Class index of object pixels far enough from any other label."""
BORDER = 2
"""Class index of object pixels close to background or to another object."""
IGNORE = -1
"""Target value of pixels excluded from the loss."""


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Validate an instance label image and return it as an integer array.

    Parameters
    ----------
    labels : np.ndarray
        Instance labels, 0 = background, positive integers = objects.

    Returns
    -------
    np.ndarray
        The same labels, as an integer (or bool converted to uint8) array.

    Raises
    ------
    ValueError
        If the array is not integer/bool, is 0-dimensional or contains negative labels.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.ndim == 0:
        raise ValueError("labels must have at least one dimension")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    return labels


def instances_to_classes(labels: np.ndarray, border_width: int = 2) -> np.ndarray:
    """Convert an instance label image to background / interior / border classes.

    A pixel of an object is a :data:`BORDER` pixel if, within a chessboard (L-infinity)
    distance of ``border_width`` pixels, there is a pixel with a different label
    (background or another object). In other words the border is found with a
    ``(2 * border_width + 1)``-wide square max/min filter. Two touching objects are
    therefore separated by a band of ``2 * border_width`` border pixels, and objects too
    small to have an interior consist only of border pixels.

    The image edge is *not* a boundary: pixels outside the image are treated as copies of
    the nearest edge pixel, so an object cut by the image edge has no border along it.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels (2D, though any dimensionality works), 0 = background.
    border_width : int, optional
        Width of the border band in pixels (chessboard distance), by default 2.
        ``0`` gives no border at all.

    Returns
    -------
    np.ndarray
        ``uint8`` array of the same shape with values :data:`BACKGROUND`,
        :data:`INTERIOR` and :data:`BORDER`.

    Raises
    ------
    ValueError
        If ``border_width`` is negative or ``labels`` is not a valid label image.
    """
    labels = _check_labels(labels)
    if border_width < 0:
        raise ValueError(f"border_width must be >= 0, got {border_width}")
    foreground = labels > 0
    classes = np.where(foreground, INTERIOR, BACKGROUND).astype(np.uint8)
    if border_width == 0 or not foreground.any():
        return classes
    size = 2 * border_width + 1
    local_max = ndi.maximum_filter(labels, size=size, mode="nearest")
    local_min = ndi.minimum_filter(labels, size=size, mode="nearest")
    border = foreground & ((local_max != labels) | (local_min != labels))
    classes[border] = BORDER
    return classes


def classes_to_target(classes: np.ndarray, ignore_mask: np.ndarray | None = None) -> np.ndarray:
    """Turn a class image into an ``int64`` loss target.

    Parameters
    ----------
    classes : np.ndarray
        Non-negative integer class indices (e.g. from :func:`instances_to_classes`).
    ignore_mask : np.ndarray or None, optional
        Boolean mask of the same shape; ``True`` pixels become :data:`IGNORE`.

    Returns
    -------
    np.ndarray
        ``int64`` target, a copy of ``classes`` with ignored pixels set to ``-1``.

    Raises
    ------
    ValueError
        If the shapes of ``classes`` and ``ignore_mask`` differ.
    """
    target = np.asarray(classes).astype(np.int64, copy=True)
    if ignore_mask is not None:
        ignore_mask = np.asarray(ignore_mask, dtype=bool)
        if ignore_mask.shape != target.shape:
            raise ValueError(
                f"ignore_mask shape {ignore_mask.shape} does not match classes shape {target.shape}"
            )
        target[ignore_mask] = IGNORE
    return target


def class_ids_to_target(class_ids: np.ndarray) -> np.ndarray:
    """Turn a multi-class mask (0 = void) into an ``int64`` loss target.

    Parameters
    ----------
    class_ids : np.ndarray
        Integer mask where 0 means void / unlabelled and ``1..K`` are the classes.

    Returns
    -------
    np.ndarray
        ``int64`` target where void pixels are :data:`IGNORE` (``-1``) and class ``k`` is
        ``k - 1`` (so classes are ``0..K-1``, as expected by the loss).

    Raises
    ------
    ValueError
        If ``class_ids`` is not an integer array or contains negative values.
    """
    class_ids = np.asarray(class_ids)
    if class_ids.dtype != bool and not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(f"class_ids must be an integer array, got dtype {class_ids.dtype}")
    target = class_ids.astype(np.int64) - 1
    if target.size and target.min() < IGNORE:
        raise ValueError("class_ids must be non-negative (0 = void)")
    return target


def normalized_distance(labels: np.ndarray) -> np.ndarray:
    """Per-object distance to the object's edge, divided by the object's largest one.

    For every object pixel: the Euclidean distance to the nearest pixel outside the
    object (background or another object), divided by the largest such distance inside
    the same object, so each object rises from about 0 at its edge to 1 at its centre
    whatever its size, and two touching objects meet in a valley at their contact. Outside
    the image counts as outside the object. Background is 0.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels (2-D), 0 = background.

    Returns
    -------
    np.ndarray
        ``float32`` array of the same shape with values in ``[0, 1]``.
    """
    labels = _check_labels(labels)
    out = np.zeros(labels.shape, np.float32)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        inside = np.pad(labels[box] == index, 1)
        distance = ndi.distance_transform_edt(inside)[(slice(1, -1),) * labels.ndim]
        top = float(distance.max())
        if top > 0:
            region = out[box]
            mask = inside[(slice(1, -1),) * labels.ndim]
            region[mask] = distance[mask] / top
    return out
