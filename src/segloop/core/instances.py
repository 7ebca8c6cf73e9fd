"""Instance labels from network outputs, and splitting of touching objects.

The U-Net predicts softmax probabilities ``probs`` of shape ``(C, H, W)`` with channel 0
background, 1 interior and 2 border (the "3-class" target: a border band separates
touching objects).  This module turns such outputs (or hard class maps, or plain binary
masks) into int32 instance labels (0 = background, objects 1..N); :mod:`.counting`
measures them.

All labelling functions work on one 2D frame; use :func:`per_frame` for a ``(T, ...)``
stack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.measure import label as sk_label
from skimage.segmentation import watershed


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be a 2D (H, W) array, got shape {array.shape}; "
            "use per_frame() for a (T, H, W) stack"
        )
    return array


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove objects smaller than ``min_size`` pixels and relabel to 1..N.

    Parameters
    ----------
    labels : np.ndarray
        Non-negative integer labels, any dimensionality.
    min_size : int
        Objects with fewer pixels are set to 0. ``0`` or ``1`` keeps everything.

    Returns
    -------
    np.ndarray
        int32 labels, relabelled sequentially 1..N.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64)
    if not labels.size or labels.max() <= 0:
        return np.zeros(labels.shape, np.int32)
    if labels.min() < 0:
        raise ValueError("labels must be non-negative")
    # one bincount instead of np.unique / relabel_sequential: O(pixels), no sort
    areas = np.bincount(labels.ravel())
    keep = areas >= max(min_size, 1)
    keep[0] = False
    table = np.zeros(len(areas), np.int32)
    table[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return table[labels]


def object_peaks(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Highest ``values`` inside each object: ``peaks[i]`` is object ``i + 1``'s.

    Parameters
    ----------
    labels : np.ndarray
        Sequential int labels 1..N (0 = background).
    values : np.ndarray
        Map of the same shape, for example a predicted distance.
    """
    n_objects = int(labels.max(initial=0))
    if n_objects == 0:
        return np.zeros(0, np.float32)
    # np.maximum.at instead of ndimage.maximum, which sorts every pixel (1.4 s on 4.7 Mpx)
    peaks = np.full(n_objects + 1, -np.inf, dtype=np.float64)
    np.maximum.at(peaks, labels.ravel(), np.asarray(values, dtype=np.float64).ravel())
    return peaks[1:].astype(np.float32)


def drop_weak_objects(labels: np.ndarray, values: np.ndarray, min_peak: float) -> np.ndarray:
    """Remove objects whose highest ``values`` is below ``min_peak``; relabel 1..N.

    With a distance head the peak is how deep the network thinks the object's centre
    is (1 = a full nucleus); faint blobs it only half believes in stay far below that.
    """
    if min_peak <= 0 or labels.max(initial=0) == 0:
        return labels
    keep = np.concatenate([[False], object_peaks(labels, values) >= min_peak])
    return remove_small(np.where(keep[labels], labels, 0), 0)


def split_large_seeds(
    seeds: np.ndarray,
    seed_map: np.ndarray,
    seed_threshold: float,
    factor: float,
    min_part: float = 0.4,
) -> np.ndarray:
    """Split seeds much larger than the image's typical seed where the seed map breaks up.

    Two touching nuclei often share one seed at the seed threshold. A seed larger than
    ``factor`` x the median seed area is re-thresholded at ``seed_threshold + 0.1``,
    ``+ 0.2``, ... below 1; once it falls into two or more parts of at least ``min_part``
    x the median seed area, those parts replace it (the watershed then shares its pixels
    among them). The sizes are the image's own, so this works for any object size.

    Parameters
    ----------
    seeds : np.ndarray
        Sequential seed labels 1..N.
    seed_map : np.ndarray
        The map the seeds were thresholded from (distance or interior probability).
    seed_threshold : float
        The threshold that made ``seeds``.
    factor : float
        Seeds larger than this multiple of the median seed area are candidates; 0 disables.
    min_part : float, optional
        Smallest part kept, as a fraction of the median seed area.
    """
    if factor <= 0 or seeds.max(initial=0) < 3:
        return seeds
    median = float(np.median(np.bincount(seeds.ravel())[1:]))
    for step in range(1, 10):
        level = seed_threshold + 0.1 * step
        if level >= 1.0:
            break
        area = np.bincount(seeds.ravel())
        large = area > factor * median
        large[0] = False
        if not large.any():
            break
        parts, _ = ndi.label((seed_map > level) & large[seeds])
        parts = remove_small(parts, max(3, int(min_part * median)))
        inside = parts > 0
        pairs = np.unique(np.stack([seeds[inside], parts[inside]]), axis=1)
        split = np.bincount(pairs[0], minlength=len(area)) >= 2
        split[0] = False
        if split.any():
            offset = int(seeds.max())
            new = np.where(inside, parts + offset, 0)
            seeds = remove_small(np.where(split[seeds], new, seeds), 0)
    return seeds


def _seeded_watershed(
    landscape: np.ndarray, seeds: np.ndarray, mask: np.ndarray, min_size: int
) -> np.ndarray:
    """Flood ``landscape`` from ``seeds`` inside ``mask``; unseeded components keep a label."""
    if seeds.max(initial=0) > 0:
        labels = watershed(landscape, markers=seeds, mask=mask).astype(np.int32)
    else:
        labels = np.zeros(mask.shape, dtype=np.int32)
    orphans = mask & (labels == 0)
    if orphans.any():
        extra, _ = ndi.label(orphans)
        offset = int(labels.max())
        labels = np.where(extra > 0, extra.astype(np.int32) + offset, labels)
    return remove_small(labels, min_size)


def seed_map_of(
    probs: np.ndarray, smooth: float = 0.0, distance: np.ndarray | None = None
) -> np.ndarray:
    """The map that seeds and floods the watershed (and whose per-object peak
    ``min_peak`` reads): the predicted distance if given, else the interior probability,
    after an optional Gaussian of sigma ``smooth``; float32."""
    seed_map = (probs[1] if distance is None else distance).astype(np.float32, copy=False)
    return ndi.gaussian_filter(seed_map, smooth) if smooth > 0 else seed_map


def _foreground_and_seed_map(
    probs: np.ndarray, fg_threshold: float, smooth: float, distance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Hole-filled foreground mask (``1 - p_bg > fg_threshold``, after the same optional
    Gaussian) and :func:`seed_map_of`."""
    p_bg = probs[0].astype(np.float32, copy=False)
    if smooth > 0:
        p_bg = ndi.gaussian_filter(p_bg, smooth)
    mask = ndi.binary_fill_holes((1.0 - p_bg) > fg_threshold)
    return mask, seed_map_of(probs, smooth, distance)


def instances_from_probabilities(
    probs: np.ndarray,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    min_seed_size: int = 3,
    smooth: float = 0.0,
    distance: np.ndarray | None = None,
    min_peak: float = 0.0,
    split_large: float = 0.0,
) -> np.ndarray:
    """Instance labels from 3-class (background, interior, border) probabilities.

    Foreground is ``1 - p_background > fg_threshold``. Seeds are the connected components
    of ``p_interior > seed_threshold`` inside the foreground (seeds with fewer than
    ``min_seed_size`` pixels are dropped). A seeded watershed on ``-p_interior`` then
    shares the foreground (border band included) among the seeds. Foreground components
    that received no seed (for example small cells predicted as border only) become
    objects of their own, unless ``min_peak`` drops them.

    Parameters
    ----------
    probs : np.ndarray
        Probabilities of shape ``(C, H, W)`` with ``C >= 2``: channel 0 background,
        channel 1 interior (channel 2, border, is implied by ``1 - p_bg - p_int``).
    fg_threshold : float, optional
        Threshold on the foreground probability ``1 - p_bg``.
    seed_threshold : float, optional
        Threshold on the interior probability for seeds.
    min_size : int, optional
        Objects with fewer pixels are removed after the watershed.
    min_seed_size : int, optional
        Seeds with fewer pixels are ignored (their pixels join a neighbour or an
        unseeded component).
    smooth : float, optional
        Sigma (pixels) of a Gaussian applied to both probability maps first, so pixel
        speckle does not become one-pixel objects or holes; 0 disables it. Holes inside
        the foreground mask are filled.
    distance : np.ndarray or None, optional
        Predicted normalised distance to the object edge ``(H, W)`` (a model's distance
        head). When given it replaces the interior probability for the seeds
        (``distance > seed_threshold``) and the watershed landscape.
    min_peak : float, optional
        Objects whose highest seed-map value (distance, else interior probability) is
        below this are dropped, unseeded ones included; 0 (default) keeps them all.
    split_large : float, optional
        Seeds larger than this multiple of the image's median seed area are split where
        the seed map breaks them up at higher levels (:func:`split_large_seeds`); 0
        (default) disables it.

    Returns
    -------
    np.ndarray
        int32 labels ``(H, W)``, 0 = background, objects 1..N.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(
            f"probs must have shape (C, H, W) with C >= 2 (background, interior[, border]), "
            f"got {probs.shape}; use per_frame() for a (T, C, H, W) stack"
        )
    mask, seed_map = _foreground_and_seed_map(probs, fg_threshold, smooth, distance)
    seeds, _ = ndi.label((seed_map > seed_threshold) & mask)
    seeds = remove_small(seeds, min_seed_size)
    seeds = split_large_seeds(seeds, seed_map, seed_threshold, split_large)
    labels = _seeded_watershed(-seed_map, seeds, mask, min_size)
    return drop_weak_objects(labels, seed_map, min_peak)


def refine_outlines(
    coarse_labels: np.ndarray,
    coarse_probs: np.ndarray,
    fine_probs: np.ndarray,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.5,
    min_size: int = 0,
    smooth: float = 0.0,
    coarse_distance: np.ndarray | None = None,
    fine_distance: np.ndarray | None = None,
) -> np.ndarray:
    """Keep the objects of a coarse pass, draw their outlines from a finer one.

    Used when an image was shrunk for the network (objects larger than the model's):
    the shrunk pass decides which objects exist and how touching ones are split, the
    full-resolution pass gives the outlines. Each coarse object's confident interior
    (``p_interior > seed_threshold``) seeds a watershed of the fine interior probability
    inside the fine foreground; fine foreground that no coarse object reaches is dropped.
    All arrays are on the same (input) grid.

    Parameters
    ----------
    coarse_labels : np.ndarray
        Instances of the coarse pass, (H, W).
    coarse_probs, fine_probs : np.ndarray
        Class probabilities (C, H, W) of the coarse and the fine pass.
    fg_threshold, seed_threshold, min_size, smooth
        As in :func:`instances_from_probabilities` (``min_size`` in these pixels).
    coarse_distance, fine_distance : np.ndarray or None
        Predicted distances of the two passes (models with a distance head): they take
        the place of the interior probabilities.

    Returns
    -------
    np.ndarray
        int32 labels (H, W), 0 = background, objects 1..N.
    """
    coarse_labels = _check_2d(coarse_labels, "coarse_labels")
    mask, seed_map = _foreground_and_seed_map(fine_probs, fg_threshold, smooth, fine_distance)
    coarse_seed_map = coarse_probs[1] if coarse_distance is None else coarse_distance
    seeds = np.where(mask & (coarse_seed_map > seed_threshold), coarse_labels, 0)
    if seeds.max(initial=0) == 0:
        return np.zeros(coarse_labels.shape, np.int32)
    labels = watershed(-seed_map, markers=seeds.astype(np.int32), mask=mask)
    return remove_small(labels, min_size)


def instances_from_class_map(
    class_map: np.ndarray, interior: int = 1, border: int = 2, min_size: int = 0
) -> np.ndarray:
    """Instance labels from a hard class map (e.g. ``argmax`` of the probabilities).

    Foreground is ``class_map > 0``; seeds are the connected components of
    ``class_map == interior``; a watershed on the negated Euclidean distance transform of
    the foreground assigns border pixels to the nearest seed. Foreground components
    without any interior pixel become objects of their own.

    Parameters
    ----------
    class_map : np.ndarray
        Integer class map ``(H, W)``: 0 background, ``interior``, ``border``.
    interior : int, optional
        Class value of object interiors.
    border : int, optional
        Class value of the border band (never a seed; must differ from ``interior``).
    min_size : int, optional
        Objects with fewer pixels are removed.

    Returns
    -------
    np.ndarray
        int32 labels ``(H, W)``, 0 = background, objects 1..N.
    """
    class_map = _check_2d(class_map, "class_map")
    if interior == border or interior == 0:
        raise ValueError(
            f"interior ({interior}) must be non-zero and differ from border ({border})"
        )
    mask = class_map > 0
    seeds, _ = ndi.label(class_map == interior)
    distance = ndi.distance_transform_edt(mask)
    return _seeded_watershed(-distance, seeds.astype(np.int32), mask, min_size)


def connected_components(
    mask_or_labels: np.ndarray, min_size: int = 0, connectivity: int = 1
) -> np.ndarray:
    """Connected components of a mask (or split disconnected pieces of existing labels).

    Parameters
    ----------
    mask_or_labels : np.ndarray
        Boolean mask or integer labels (different label values stay different objects).
    min_size : int, optional
        Components with fewer pixels are removed.
    connectivity : int, optional
        1 = 4-connectivity in 2D (faces), ``ndim`` = full (8-connectivity in 2D).

    Returns
    -------
    np.ndarray
        int32 labels, 0 = background, objects 1..N.
    """
    array = np.asarray(mask_or_labels)
    labels = sk_label(array, background=0, connectivity=connectivity)
    return remove_small(labels, min_size)


def split_touching(
    mask_or_labels: np.ndarray, min_distance: int = 5, min_size: int = 0
) -> np.ndarray:
    """Split touching round objects with a distance-transform watershed.

    The classic scikit-image recipe: seeds are the local maxima of the Euclidean distance
    transform of the foreground (``peak_local_max`` with ``min_distance``, one set per
    connected component), flooded with a watershed on the negated distance inside the
    foreground. Each connected component is processed on its own (the image edge counts
    as its boundary), so with an integer labels input different input objects are never
    merged, only split. Two touching disks become two objects; a single disk stays one.

    Parameters
    ----------
    mask_or_labels : np.ndarray
        2D boolean mask or integer labels.
    min_distance : int, optional
        Minimum distance in pixels between seeds (about the smallest object radius).
    min_size : int, optional
        Objects with fewer pixels are removed.

    Returns
    -------
    np.ndarray
        int32 labels ``(H, W)``, 0 = background, objects 1..N.
    """
    array = _check_2d(mask_or_labels, "mask_or_labels")
    components = connected_components(array)
    out = np.zeros(components.shape, dtype=np.int32)
    n_objects = 0
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None:
            continue
        sub = _split_one(components[box] == index, min_distance)
        out[box][sub > 0] = sub[sub > 0] + n_objects
        n_objects += int(sub.max())
    return remove_small(out, min_size)


def _split_one(obj: np.ndarray, min_distance: int) -> np.ndarray:
    """Distance-transform watershed of one connected object (cropped to its bounding box)."""
    padded = np.pad(obj, 1)  # the image edge counts as object boundary
    distance = ndi.distance_transform_edt(padded)
    peaks = peak_local_max(distance, min_distance=max(int(min_distance), 1), exclude_border=False)
    if len(peaks) < 2:
        return obj.astype(np.int32)
    seeds = np.zeros(padded.shape, dtype=np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    labels = _seeded_watershed(-distance, seeds, padded, 0)
    return labels[1:-1, 1:-1]


def per_frame(func: Callable[..., np.ndarray], stack: np.ndarray, **kw: Any) -> np.ndarray:
    """Apply a 2D function to each frame of a stack and stack the results.

    Parameters
    ----------
    func : callable
        Function taking one frame (``stack[t]``) and keyword arguments, for example
        :func:`split_touching` on ``(T, H, W)`` or :func:`instances_from_probabilities`
        on ``(T, C, H, W)``.
    stack : np.ndarray
        Array whose first axis is time/frames.
    **kw
        Passed to ``func``.

    Returns
    -------
    np.ndarray
        ``np.stack([func(frame, **kw) for frame in stack])``. Labels are unique within a
        frame only: object 1 of frame 0 and object 1 of frame 1 are unrelated.
    """
    stack = np.asarray(stack)
    if stack.ndim < 3:
        raise ValueError(f"per_frame expects a stack with a leading frame axis, got {stack.shape}")
    return np.stack([func(frame, **kw) for frame in stack])
