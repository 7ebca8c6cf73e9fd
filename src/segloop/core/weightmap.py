"""U-Net pixel weight maps (Ronneberger et al., 2015, eq. 2).

The weight map emphasises the thin background gaps between neighbouring objects::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

where ``d1`` and ``d2`` are the Euclidean distances from pixel ``x`` to the nearest and the
second-nearest object and ``w_c`` balances the foreground / background frequencies.

The fast implementation computes, for every object, a distance transform only inside the
object's bounding box expanded by a margin ``R`` beyond which the border term is negligible,
and keeps running arrays of the two smallest distances seen so far.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

_TOLERANCE = 1e-4
"""Largest border-term value that the windowed computation may drop."""
_MAX_DIRECT_LABEL = 100_000
"""Largest label id handled without relabelling (``find_objects`` lists every id)."""
W0_RANGE = (0.0, 1e6)
"""Allowed border-term amplitudes: 0 turns the term off; larger ones overflow float32."""
SIGMA_RANGE = (0.01, 1e4)
"""Allowed border-term widths in pixels."""


def check_parameters(w0: float, sigma: float) -> None:
    """Raise ``ValueError`` unless ``w0`` and ``sigma`` are finite and in range.

    Parameters
    ----------
    w0 : float
        Border-term amplitude, within :data:`W0_RANGE`.
    sigma : float
        Border-term width in pixels, within :data:`SIGMA_RANGE`.
    """
    for name, value, (low, high) in (("w0", w0, W0_RANGE), ("sigma", sigma, SIGMA_RANGE)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{name} must be between {low:g} and {high:g} (got {value})")


def _class_weights(labels: np.ndarray, class_balance: bool) -> np.ndarray:
    """Return the class-balancing term ``w_c`` as a float64 array.

    Parameters
    ----------
    labels : np.ndarray
        Instance labels, 0 = background.
    class_balance : bool
        If False, ``w_c`` is 1 everywhere.

    Returns
    -------
    np.ndarray
        ``w_c(x) = N / (2 * N_class(x))`` for the two classes foreground (``labels > 0``)
        and background; its mean is 1. It is 1 everywhere when only one class is present
        or when ``class_balance`` is False.
    """
    w_c = np.ones(labels.shape, dtype=np.float64)
    if not class_balance:
        return w_c
    foreground = labels > 0
    n_total = labels.size
    n_fg = int(np.count_nonzero(foreground))
    n_bg = n_total - n_fg
    if n_fg == 0 or n_bg == 0:
        return w_c
    w_c[foreground] = n_total / (2.0 * n_fg)
    w_c[~foreground] = n_total / (2.0 * n_bg)
    return w_c


def _margin(w0: float, sigma: float, tolerance: float = _TOLERANCE) -> int:
    """Distance beyond which an object cannot contribute to the border term.

    If a pixel is farther than ``R`` from an object, that object can only be its nearest
    or second-nearest object with ``d1 + d2 >= d2 > R`` (since ``d2 >= d1``), so the term is
    at most ``w0 * exp(-R**2 / (2 * sigma**2))``. Solving ``<= tolerance`` for ``R`` gives
    ``R = sigma * sqrt(2 * ln(w0 / tolerance))``; such distances may be treated as infinite.

    Parameters
    ----------
    w0 : float
        Amplitude of the border term.
    sigma : float
        Width of the border term in pixels.
    tolerance : float, optional
        Largest term value that may be dropped.

    Returns
    -------
    int
        The margin ``R`` in pixels (0 when ``w0 <= tolerance``).
    """
    if w0 <= tolerance:
        return 0
    return int(math.ceil(sigma * math.sqrt(2.0 * math.log(w0 / tolerance))))


def _sequential(labels: np.ndarray) -> np.ndarray:
    """Relabel so that object ids are ``1..n`` when the ids are large.

    Parameters
    ----------
    labels : np.ndarray
        Non-negative integer labels.

    Returns
    -------
    np.ndarray
        ``labels`` itself if its largest id is at most ``_MAX_DIRECT_LABEL`` (so that
        ``find_objects`` returns a short list), else labels relabelled to ``0..n``.
    """
    max_label = int(labels.max()) if labels.size else 0
    if max_label <= _MAX_DIRECT_LABEL:
        return labels
    uniq, inverse = np.unique(labels, return_inverse=True)
    if uniq[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape)


def _check(labels: np.ndarray, sigma: float) -> np.ndarray:
    """Validate inputs of the weight map functions and return integer labels."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative (0 = background)")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return labels


def _check_all(labels: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    check_parameters(w0, sigma)
    return _check(labels, sigma)


def _two_smallest_distances(labels: np.ndarray, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest object, truncated at ``margin``.

    Parameters
    ----------
    labels : np.ndarray
        Non-negative integer labels with reasonably dense ids.
    margin : int
        Each object's distance transform is computed in its bounding box expanded by this
        many pixels; pixels outside get distance ``inf`` to that object.

    Returns
    -------
    tuple of np.ndarray
        ``(d1, d2)`` float64 arrays; ``inf`` where fewer objects are within ``margin``.
    """
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        window = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        # Every pixel of object ``index`` lies inside ``box``, so the windowed EDT is exact
        # for all window pixels; pixels outside the window are farther than ``margin``.
        dist = ndi.distance_transform_edt(labels[window] != index)
        near = d1[window]  # views: the in-place updates below write into d1 and d2
        second = d2[window]
        np.minimum(second, np.maximum(near, dist), out=second)
        np.minimum(near, dist, out=near)
    return d1, d2


def weight_map(
    labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """Compute the U-Net weight map of an instance label image.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))`` where ``d1`` and
    ``d2`` are the Euclidean distances (between pixel centres, so a background pixel next
    to an object has distance 1) to the nearest and second-nearest object, objects being
    the distinct positive labels.

    The border term is added on background pixels only, as in Fig. 3d of the U-Net paper
    and common reimplementations (on object pixels ``d1`` is 0 and the term would merely
    up-weight every object pixel near a neighbour). It is 0 with fewer than two objects.
    Contributions below ``1e-4`` are dropped (see :func:`_margin`), which makes the cost
    proportional to the total area of the objects' expanded bounding boxes.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels (any dimensionality, usually 2D), 0 = background.
    w0 : float, optional
        Amplitude of the border term, by default 10.
    sigma : float, optional
        Width of the border term in pixels, by default 5.
    class_balance : bool, optional
        If True (default) ``w_c(x) = N / (2 * N_class(x))`` for the classes foreground and
        background (mean 1; 1 everywhere if only one class is present), else ``w_c = 1``.

    Returns
    -------
    np.ndarray
        ``float32`` weight map of the same shape as ``labels``.

    Raises
    ------
    ValueError
        If ``labels`` is not a non-negative integer array, or ``w0`` / ``sigma`` are not
        finite or outside :data:`W0_RANGE` / :data:`SIGMA_RANGE`.
    """
    labels = _check_all(labels, w0, sigma)
    weights = _class_weights(labels, class_balance)
    margin = _margin(w0, sigma)
    if margin == 0 or labels.size == 0:
        return weights.astype(np.float32)
    labels = _sequential(labels)
    d1, d2 = _two_smallest_distances(labels, margin)
    close = (labels == 0) & np.isfinite(d2)
    total = d1[close] + d2[close]
    weights[close] += w0 * np.exp(-(total**2) / (2.0 * sigma**2))
    return weights.astype(np.float32)


def _weight_map_reference(
    labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """Slow reference of :func:`weight_map` (one full-image EDT per object); tests only.

    Parameters
    ----------
    labels : np.ndarray
        Integer instance labels, 0 = background.
    w0 : float, optional
        Amplitude of the border term.
    sigma : float, optional
        Width of the border term in pixels.
    class_balance : bool, optional
        Whether to balance foreground and background frequencies.

    Returns
    -------
    np.ndarray
        ``float32`` weight map.
    """
    labels = _check(labels, sigma)
    weights = _class_weights(labels, class_balance)
    ids = np.unique(labels[labels > 0])
    if len(ids) < 2:
        return weights.astype(np.float32)
    dists = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    dists.sort(axis=0)
    term = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2.0 * sigma**2))
    background = labels == 0
    weights[background] += term[background]
    return weights.astype(np.float32)
