"""Segmentation quality metrics: pixel overlap, instance matching, CTC SEG, count error.

Instance label images use 0 for background and positive integers for objects; ids need not
be consecutive. All functions work for label arrays of any dimensionality (2D, 3D, ...) as
long as reference and prediction have the same shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def _check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Raise ``ValueError`` if ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}"
        )


def pixel_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Intersection over union of two binary masks (1.0 when both are empty).

    Parameters
    ----------
    pred, true : np.ndarray
        Boolean masks of the same shape (non-zero values count as True).

    Returns
    -------
    float
        ``|pred & true| / |pred | true|``.
    """
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    _check_same_shape(pred, true, ("pred", "true"))
    union = int(np.count_nonzero(pred | true))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & true)) / union


def dice_coefficient(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty).

    Parameters
    ----------
    pred, true : np.ndarray
        Boolean masks of the same shape (non-zero values count as True).

    Returns
    -------
    float
        ``2 |pred & true| / (|pred| + |true|)``.
    """
    pred, true = np.asarray(pred, dtype=bool), np.asarray(true, dtype=bool)
    _check_same_shape(pred, true, ("pred", "true"))
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(true))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & true)) / total


def _ratio(num: float, den: float, empty: float) -> float:
    """``num / den``, or ``empty`` when ``den`` is 0."""
    return num / den if den else empty


@dataclass(frozen=True)
class MatchCounts:
    """Result of matching predicted to reference instances; add instances to aggregate.

    Ratios whose denominator is 0 are 1.0 when there is nothing at all (no reference and no
    predicted object: a perfect result) and 0.0 otherwise.

    Attributes
    ----------
    tp : int
        Matched pairs (true positives).
    fp : int
        Unmatched predicted objects (false positives).
    fn : int
        Unmatched reference objects (false negatives).
    sum_iou : float
        Sum of the IoUs of the matched pairs.
    """

    tp: int
    fp: int
    fn: int
    sum_iou: float

    def _empty(self) -> float:
        """Value of a ratio with a zero denominator."""
        return 1.0 if self.tp + self.fp + self.fn == 0 else 0.0

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``."""
        return _ratio(self.tp, self.tp + self.fp, self._empty())

    @property
    def recall(self) -> float:
        """``TP / (TP + FN)``."""
        return _ratio(self.tp, self.tp + self.fn, self._empty())

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)``."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self._empty())

    @property
    def ap(self) -> float:
        """Average precision as in the Data Science Bowl 2018: ``TP / (TP + FP + FN)``."""
        return _ratio(self.tp, self.tp + self.fp + self.fn, self._empty())

    @property
    def mean_matched_iou(self) -> float:
        """Mean IoU of the matched pairs (0.0 when there is no match)."""
        return _ratio(self.sum_iou, self.tp, 0.0)

    def __add__(self, other: MatchCounts) -> MatchCounts:
        """Aggregate the counts of two images."""
        if not isinstance(other, MatchCounts):
            return NotImplemented
        return MatchCounts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.sum_iou + other.sum_iou,
        )

    def __radd__(self, other: object) -> MatchCounts:
        """Allow ``sum(list_of_counts)`` (which starts from ``0``)."""
        if other == 0:
            return self
        return NotImplemented

    def as_dict(self) -> dict[str, float | int]:
        """Counts and derived ratios as a JSON-serialisable dict."""
        out: dict[str, float | int] = asdict(self)
        for name in ("precision", "recall", "f1", "ap", "mean_matched_iou"):
            out[name] = getattr(self, name)
        return out


def _relabel(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Map object ids to ``1..n`` (background stays 0).

    Parameters
    ----------
    labels : np.ndarray
        Non-negative integer labels.

    Returns
    -------
    tuple
        ``(relabelled int64 array, n)``.
    """
    uniq, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.int64)
    if uniq.size and uniq[0] != 0:
        inverse += 1
    n = int(uniq.size - (1 if uniq.size and uniq[0] == 0 else 0))
    return inverse, n


def _check_labels(true_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Validate two label images and return them as arrays."""
    true_labels, pred_labels = np.asarray(true_labels), np.asarray(pred_labels)
    _check_same_shape(true_labels, pred_labels, ("true_labels", "pred_labels"))
    for name, arr in (("true_labels", true_labels), ("pred_labels", pred_labels)):
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} must be non-negative (0 = background)")
    return true_labels, pred_labels


@dataclass(frozen=True)
class _Overlap:
    """Sparse contingency table of two label images (ids ``1..n``, index ``id - 1``)."""

    n_true: int
    n_pred: int
    true_idx: np.ndarray  # index of the reference object of each overlapping pair
    pred_idx: np.ndarray  # index of the predicted object of each overlapping pair
    intersection: np.ndarray  # pixels in common
    true_area: np.ndarray  # (n_true,)
    pred_area: np.ndarray  # (n_pred,)

    @property
    def iou(self) -> np.ndarray:
        """IoU of each overlapping pair."""
        union = self.true_area[self.true_idx] + self.pred_area[self.pred_idx] - self.intersection
        return self.intersection / union


def _overlap(true_labels: np.ndarray, pred_labels: np.ndarray) -> _Overlap:
    """Build the sparse contingency table of all overlapping (reference, predicted) pairs."""
    true_labels, pred_labels = _check_labels(true_labels, pred_labels)
    t, n_true = _relabel(true_labels.ravel())
    p, n_pred = _relabel(pred_labels.ravel())
    true_area = np.bincount(t, minlength=n_true + 1)[1:].astype(np.float64)
    pred_area = np.bincount(p, minlength=n_pred + 1)[1:].astype(np.float64)
    both = (t > 0) & (p > 0)
    codes = (t[both] - 1) * np.int64(max(n_pred, 1)) + (p[both] - 1)
    pairs, counts = np.unique(codes, return_counts=True)
    true_idx, pred_idx = np.divmod(pairs, max(n_pred, 1))
    return _Overlap(
        n_true, n_pred, true_idx, pred_idx, counts.astype(np.float64), true_area, pred_area
    )


def _match_pairs(ov: _Overlap, iou_threshold: float) -> np.ndarray:
    """IoUs of the matched pairs (a one-to-one matching of pairs with IoU > threshold)."""
    iou = ov.iou
    keep = iou > iou_threshold
    if iou_threshold >= 0.5:
        # IoU > 0.5 implies |R & S| > |R|/2 and > |S|/2: each object has at most one partner.
        return iou[keep]
    true_idx, pred_idx, iou = ov.true_idx[keep], ov.pred_idx[keep], iou[keep]
    if iou.size == 0:
        return iou
    rows, row_of = np.unique(true_idx, return_inverse=True)
    cols, col_of = np.unique(pred_idx, return_inverse=True)
    matrix = np.zeros((rows.size, cols.size))
    matrix[row_of, col_of] = iou
    # Maximise the number of matches first, then the summed IoU (the IoU part of the score
    # of any matching is < 1 thanks to the division by the largest possible match count).
    score = (matrix > 0) + matrix / (2.0 * min(matrix.shape))
    r, c = linear_sum_assignment(score, maximize=True)
    matched = matrix[r, c]
    return matched[matched > 0]


def match_instances(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> MatchCounts:
    """Match predicted to reference instances by IoU.

    A pair can be matched only if its IoU is *strictly* greater than ``iou_threshold``.
    For thresholds >= 0.5 such pairs are unique (an object cannot have IoU > 0.5 with two
    disjoint objects), so all of them are matches. For lower thresholds a one-to-one
    matching is found with :func:`scipy.optimize.linear_sum_assignment` that maximises the
    number of matches and, among those, the summed IoU.

    Parameters
    ----------
    true_labels, pred_labels : np.ndarray
        Reference and predicted instance labels of the same shape, 0 = background.
    iou_threshold : float, optional
        IoU a pair must exceed to be matched, by default 0.5.

    Returns
    -------
    MatchCounts
        TP, FP, FN and summed IoU of the matched pairs.

    Raises
    ------
    ValueError
        If the shapes differ or the arrays are not non-negative integer labels.
    """
    ov = _overlap(true_labels, pred_labels)
    matched = _match_pairs(ov, iou_threshold)
    tp = int(matched.size)
    return MatchCounts(tp=tp, fp=ov.n_pred - tp, fn=ov.n_true - tp, sum_iou=float(matched.sum()))


def matched_predictions(
    true_labels: np.ndarray, pred_labels: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """Whether each predicted object is matched (IoU > ``iou_threshold``, at least 0.5).

    For sequential predicted labels ``1..N``: entry ``i`` is object ``i + 1``'s. As such
    matches are unique, leaving out unmatched or matched objects changes no other pair.
    """
    if iou_threshold < 0.5:
        raise ValueError("matched_predictions needs an IoU threshold of at least 0.5")
    ov = _overlap(true_labels, pred_labels)
    if ov.n_pred != int(np.max(pred_labels, initial=0)):
        raise ValueError("predicted labels must be sequential 1..N")
    matched = np.zeros(ov.n_pred, bool)
    matched[ov.pred_idx[ov.iou > iou_threshold]] = True
    return matched


def seg_counts(true_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[float, int]:
    """Sum of the CTC SEG Jaccard indices and number of reference objects.

    Parameters
    ----------
    true_labels, pred_labels : np.ndarray
        Reference and predicted instance labels of the same shape, 0 = background.

    Returns
    -------
    tuple of (float, int)
        ``(sum of Jaccards, number of reference objects)``; summing both over frames and
        dividing gives the SEG score of a sequence, as the Cell Tracking Challenge does.
    """
    ov = _overlap(true_labels, pred_labels)
    return float(ov.iou[_seg_partners(ov)].sum()), ov.n_true


def _seg_partners(ov: _Overlap) -> np.ndarray:
    """Which overlapping pairs are SEG partners: ``|R & S| > |R| / 2`` (at most one ``S``
    per reference object ``R``)."""
    return 2.0 * ov.intersection > ov.true_area[ov.true_idx]


def seg_per_prediction(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """SEG Jaccard indices each predicted object earns (:func:`seg_counts`), summed.

    For sequential predicted labels ``1..N``: entry ``i`` is object ``i + 1``'s. A
    predicted object can be the partner of several reference objects (when it merges
    them); leaving predicted objects out changes no other object's entry, so the SEG of
    any subset is its entries' sum over the number of reference objects.
    """
    ov = _overlap(true_labels, pred_labels)
    if ov.n_pred != int(np.max(pred_labels, initial=0)):
        raise ValueError("predicted labels must be sequential 1..N")
    hit = _seg_partners(ov)
    return np.bincount(ov.pred_idx[hit], weights=ov.iou[hit], minlength=ov.n_pred)


def seg_score(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Cell Tracking Challenge SEG score.

    For each reference object ``R`` the predicted object ``S`` with ``|R & S| > 0.5 |R|``
    (at most one exists) gives the Jaccard index ``|R & S| / |R | S|``; reference objects
    without such a partner score 0. SEG is the mean over reference objects.

    Parameters
    ----------
    true_labels, pred_labels : np.ndarray
        Reference and predicted instance labels of the same shape, 0 = background.

    Returns
    -------
    float
        SEG in ``[0, 1]``, or ``nan`` when there is no reference object (SEG is undefined;
        use :func:`seg_counts` to aggregate frames instead).
    """
    total, n_true = seg_counts(true_labels, pred_labels)
    return total / n_true if n_true else float("nan")


def count_error(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """Relative error of the object count: ``|n_pred - n_true| / max(n_true, 1)``.

    Parameters
    ----------
    true_labels, pred_labels : np.ndarray
        Reference and predicted instance labels of the same shape, 0 = background.

    Returns
    -------
    float
        The relative count error (objects are distinct positive labels).
    """
    true_labels, pred_labels = _check_labels(true_labels, pred_labels)
    return relative_count_error(n_objects(true_labels), n_objects(pred_labels))


def n_objects(labels: np.ndarray) -> int:
    """Number of distinct positive labels."""
    return int(np.count_nonzero(np.unique(labels)))


def relative_count_error(n_true: int, n_pred: int) -> float:
    """``|n_pred - n_true| / max(n_true, 1)``, from the two counts."""
    return abs(n_pred - n_true) / max(n_true, 1)
